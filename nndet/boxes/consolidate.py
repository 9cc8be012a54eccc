"""2D to 3D consolidation: boxes of a 2D model predicted slice by slice become 3D boxes.

Retina U-Net (Jaeger et al., 2018, section 4.2): the boxes of all slices are projected onto
one plane, keeping their slice index, and clustered per class around the highest-scoring
remaining box. A cluster only takes boxes whose slices are connected to the top box's slice
through slices that also hold a member: the members lie in one unbroken run of slices
``[first, last]`` around the top's slice. The run gives the 3D box its extent along the slice
axis, ``[first, last + 1)``; its in-plane extent and score come from weighted box clustering
(``method="wbc"``) or from the top box (``method="nms"``).

Axes: ``boxes2d`` are ``[lo_1, lo_2, hi_1, hi_2]`` in the two in-plane axes of the volume,
the slice index runs along axis 0, so the 3D boxes are ``[slice_lo, lo_1, lo_2, slice_hi,
hi_1, hi_2]`` in nndet's convention.

Notes:
    Boxes a cluster leaves behind (same place, but in a slice run cut off from the top's)
    stay available for later clusters, so clusters are formed one at a time: the cost is
    O(M * N) for M output boxes, vectorised over the N boxes. That is fine for the few
    thousand boxes of one volume, not for hundreds of thousands.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nndet.boxes.ops import box_area, box_dim
from nndet.boxes.wbc import area_weights, merge_clusters


def consolidate_slices(
    boxes2d: Tensor,
    scores: Tensor,
    labels: Tensor,
    slice_idx: Tensor,
    iou_threshold: float,
    method: str = "wbc",
    patch_weights: Tensor | None = None,
    view_ids: Tensor | None = None,
    expected_views: Tensor | None = None,
    area_weighting: str = "sqrt",
) -> tuple[Tensor, Tensor, Tensor]:
    """Join per-slice 2D boxes into 3D boxes.

    Args:
        boxes2d: float [N, 4] in-plane boxes in corner format.
        scores: float [N]. labels: int [N]. slice_idx: int [N] slice of each box (axis 0).
        iou_threshold: a box joins a cluster at in-plane IoU > this with the top box.
        method: ``"wbc"`` (weighted in-plane coordinates and score, :mod:`nndet.boxes.wbc`)
            or ``"nms"`` (the top box's coordinates and score).
        patch_weights: float [N] patch-centre factors for WBC; ``None``: all ones.
        view_ids, expected_views: for WBC's missing-view penalty (see
            :func:`nndet.boxes.wbc.merge_clusters`); ``None``: no penalty.
        area_weighting: see :func:`nndet.boxes.wbc.area_weights`.

    Returns:
        ``(boxes [M, 6], scores [M], labels [M])`` sorted by descending score.
    """
    if box_dim(boxes2d) != 2:
        raise ValueError(f"consolidate_slices takes 2D boxes [N, 4], got {list(boxes2d.shape)}")
    if method not in ("wbc", "nms"):
        raise ValueError(f"unknown consolidation method {method!r}; use 'wbc' or 'nms'")
    if len(boxes2d) == 0:
        return boxes2d.new_zeros((0, 6)), scores.new_zeros(0), labels.new_zeros(0)

    cluster, tops, overlap, slice_range = _slice_clusters(
        boxes2d, scores, labels, slice_idx.long(), iou_threshold
    )
    if method == "nms":
        plane, merged_scores = boxes2d[tops], scores[tops]
    else:
        weights = overlap * area_weights(boxes2d, area_weighting)
        if patch_weights is not None:
            weights = weights * patch_weights.to(weights.dtype)
        plane, merged_scores = merge_clusters(
            boxes2d, scores, weights, cluster, len(tops), view_ids, expected_views
        )

    slices = slice_range.to(plane.dtype)
    boxes3d = torch.stack(
        [slices[:, 0], plane[:, 0], plane[:, 1], slices[:, 1] + 1, plane[:, 2], plane[:, 3]], 1
    )
    order = torch.sort(merged_scores, descending=True, stable=True).indices
    return boxes3d[order], merged_scores[order], labels[tops][order]


def _slice_clusters(
    boxes: Tensor, scores: Tensor, labels: Tensor, slice_idx: Tensor, iou_threshold: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cluster 2D boxes around top boxes within a connected run of slices.

    Returns:
        ``(cluster, tops, overlap, slice_range)``: long [N] cluster per box; long [M] top box
        of each cluster (in the order the clusters were formed); float [N] in-plane IoU of
        each box with its top; long [M, 2] first and last slice of each cluster.
    """
    n, device = len(boxes), boxes.device
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes, labels, slice_idx = boxes[order], labels[order], slice_idx[order]
    areas = box_area(boxes)
    num_slices = int(slice_idx.max()) - int(slice_idx.min()) + 1
    slice_pos = slice_idx - slice_idx.min()

    cluster = torch.full((n,), -1, dtype=torch.long, device=device)
    overlap = boxes.new_zeros(n)
    remaining = torch.ones(n, dtype=torch.bool, device=device)
    tops, ranges, next_top = [], [], 0
    while next_top < n:
        top = next_top
        iou = _iou_with(boxes, areas, top)
        candidate = remaining & (labels == labels[top]) & (iou > iou_threshold)
        candidate[top] = True  # even a degenerate (empty) top box forms its own cluster

        # unbroken run of occupied slices around the top's slice
        occupied = torch.zeros(num_slices + 2, dtype=torch.bool, device=device)
        occupied[slice_pos[candidate] + 1] = True
        gaps = torch.nonzero(~occupied).flatten() - 1
        centre = int(slice_pos[top])
        first = int(gaps[gaps < centre].max()) + 1
        last = int(gaps[gaps > centre].min()) - 1

        members = candidate & (slice_pos >= first) & (slice_pos <= last)
        cluster[members] = len(tops)
        overlap[members] = iou[members]
        overlap[top] = 1.0
        remaining &= ~members
        tops.append(top)
        ranges.append((first, last))
        rest = torch.nonzero(remaining)
        next_top = int(rest[0]) if len(rest) else n

    offset = int(slice_idx.min())
    slice_range = torch.tensor(ranges, dtype=torch.long, device=device) + offset
    tops_t = order[torch.tensor(tops, dtype=torch.long, device=device)]
    cluster_in = torch.empty_like(cluster).scatter_(0, order, cluster)
    overlap_in = torch.empty_like(overlap).scatter_(0, order, overlap)
    return cluster_in, tops_t, overlap_in, slice_range


def _iou_with(boxes: Tensor, areas: Tensor, index: int) -> Tensor:
    """IoU ``[N]`` of every 2D box with ``boxes[index]``."""
    top = boxes[index]
    lo = torch.maximum(boxes[:, :2], top[:2])
    hi = torch.minimum(boxes[:, 2:], top[2:])
    inter = (hi - lo).clamp(min=0).prod(dim=1)
    return inter / (areas + areas[index] - inter).clamp(min=1e-9)
