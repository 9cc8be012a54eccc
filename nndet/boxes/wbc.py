"""Weighted box clustering (WBC), the ensembling step of Retina U-Net (Jaeger et al., 2018).

Predictions of several views of one image (models x test-time mirrors x overlapping tiles)
are clustered per class around the highest-scoring remaining box: the cluster of a top box
holds every remaining box of its class with IoU > threshold to it. Each cluster becomes one
box. With weights ``w_i = f_i * a_i * p_i`` of its members ``i``:

    score  = sum(s_i w_i) / (sum(w_i) + n_missing * mean(w_i))
    coords = sum(c_i s_i w_i) / sum(s_i w_i)

- ``f_i``: IoU of box ``i`` with the cluster's top box (1 for the top itself);
- ``a_i``: an area (volume) weight, ``sqrt(volume)`` by default (see :func:`area_weights`);
- ``p_i``: the patch-centre weight of the view that predicted it (see
  :func:`patch_center_weights`): boxes from the border of a tile count less;
- ``n_missing = max(0, n_expected - n_views)``: ``n_expected`` is the mean over the members of
  the views expected at their positions (as in the paper's implementation), ``n_views`` the
  number of distinct views that contributed a member. A box that only some views see is
  thereby pulled towards score 0.

The top boxes are exactly the boxes greedy NMS keeps, and a box belongs to the first top (in
score order) that overlaps it above the threshold, so clustering reuses the block-wise NMS
and the spatial pair search and costs little more than NMS.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nndet.boxes.nms import DEFAULT_BLOCK_SIZE, greedy_keep_sorted
from nndet.boxes.ops import box_area, box_center, box_dim, box_size
from nndet.boxes.pairs import BoxGrid, SortedKeys, candidate_pairs, pair_iou

# Sigma of the patch-centre Gaussian as a fraction of the patch size: nnU-Net's choice for
# its sliding-window importance map.
DEFAULT_SIGMA_SCALE = 1.0 / 8


def patch_center_weights(
    boxes: Tensor, tile_boxes: Tensor, sigma_scale: float = DEFAULT_SIGMA_SCALE
) -> Tensor:
    """Patch-centre factor ``p_i`` of boxes predicted in tiles (patches) of an image.

    A normal distribution centred on the tile with standard deviation ``sigma_scale`` times
    the tile size per axis, evaluated at each box centre and scaled to 1 at the tile centre
    (the normalising constant cancels in WBC when all tiles have the same size).

    Args:
        boxes: float [N, 2*D] predicted boxes in corner format.
        tile_boxes: float [N, 2*D] (or [1, 2*D]) the tile each box was predicted in.
        sigma_scale: standard deviation as a fraction of the tile size.

    Returns:
        float [N] in (0, 1].
    """
    sigma = box_size(tile_boxes) * sigma_scale
    z = (box_center(boxes) - box_center(tile_boxes)) / sigma
    return torch.exp(-0.5 * (z * z).sum(dim=-1))


def area_weights(boxes: Tensor, mode: str = "sqrt") -> Tensor:
    """Area (volume) weight ``a_i`` of boxes ``[N, 2*D]`` -> ``[N]``.

    Modes: ``"sqrt"`` (default) ``sqrt(volume)``, growing slower than the volume so large
    boxes do not swamp a cluster; ``"log"`` ``log(1 + volume)``; ``"volume"`` the plain area
    (volume) as in the original implementation; ``"none"`` all ones.
    """
    volume = box_area(boxes)
    if mode == "sqrt":
        return volume.sqrt()
    if mode == "log":
        return torch.log1p(volume)
    if mode == "volume":
        return volume
    if mode == "none":
        return torch.ones_like(volume)
    raise ValueError(f"unknown area weighting {mode!r}; use 'sqrt', 'log', 'volume' or 'none'")


def cluster_boxes(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou_threshold: float,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy clustering around top boxes, per class (the grouping step of WBC).

    Args:
        boxes: float [N, 2*D] in corner format. scores: float [N]. labels: int [N].
        iou_threshold: a box joins a top box's cluster at IoU > this.
        block_size: boxes resolved together in the underlying NMS.

    Returns:
        ``(cluster, tops, overlap)``: long [N] cluster of every box; long [M] index of each
        cluster's top box, clusters in descending order of top score (ties by index);
        float [N] IoU of every box with its cluster's top.
    """
    n = len(boxes)
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return empty, empty, boxes.new_zeros(0)
    if iou_threshold >= 1.0:
        raise ValueError(f"cluster_boxes needs iou_threshold < 1, got {iou_threshold}")

    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes, sorted_labels = boxes[order], labels[order]
    tops = torch.nonzero(greedy_keep_sorted(sorted_boxes, sorted_labels, iou_threshold, block_size))
    tops = tops.flatten()

    # each box joins the first top, in score order, that overlaps it above the threshold
    groups = torch.unique(sorted_labels, return_inverse=True)[1]
    grid = BoxGrid(sorted_boxes, iou_threshold)
    keys = grid.keys(sorted_boxes, groups)
    areas = box_area(sorted_boxes)
    top_index = SortedKeys(keys[tops], torch.arange(len(tops), device=boxes.device))
    cluster = torch.full((n,), len(tops), dtype=torch.long, device=boxes.device)
    for first in range(0, n, block_size):  # blocks bound the memory of the look-up
        block_keys = keys[first : first + block_size]
        for query, rank in candidate_pairs(grid, block_keys, top_index):
            query = query + first
            hit = pair_iou(sorted_boxes, areas, query, tops[rank]) > iou_threshold
            cluster.scatter_reduce_(0, query[hit], rank[hit], reduce="amin")
    if bool((cluster == len(tops)).any()):
        raise RuntimeError("cluster_boxes: a box matched no top box (NaN coordinates?)")
    overlap = pair_iou(sorted_boxes, areas, torch.arange(n, device=boxes.device), tops[cluster])

    # back to input order
    cluster_in = torch.empty_like(cluster).scatter_(0, order, cluster)
    overlap_in = torch.empty_like(overlap).scatter_(0, order, overlap)
    return cluster_in, order[tops], overlap_in


def merge_clusters(
    boxes: Tensor,
    scores: Tensor,
    weights: Tensor,
    cluster: Tensor,
    num_clusters: int,
    view_ids: Tensor | None = None,
    expected_views: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Consolidate clustered boxes with the WBC formulas (module docstring).

    Args:
        boxes: float [N, 2*D] in corner format. scores: float [N].
        weights: float [N], ``w_i = f_i * a_i * p_i``.
        cluster: long [N] in ``[0, num_clusters)``, every cluster non-empty.
        view_ids: int [N] view that predicted each box; ``None``: every box its own view.
        expected_views: float [N] views expected at each box's position; ``None``: no
            penalty for missing views.

    Returns:
        ``(boxes [M, 2*D], scores [M])`` per cluster, in cluster order.
    """
    dtype = torch.promote_types(boxes.dtype, scores.dtype)
    boxes, scores, weights = boxes.to(dtype), scores.to(dtype), weights.to(dtype)
    m = num_clusters

    def per_cluster(values: Tensor) -> Tensor:
        out = values.new_zeros((m, *values.shape[1:]))
        return out.index_add_(0, cluster, values)

    count = per_cluster(torch.ones_like(scores))
    sum_w = per_cluster(weights)
    score_w = scores * weights
    sum_sw = per_cluster(score_w)
    sum_csw = per_cluster(boxes * score_w[:, None])

    n_missing = torch.zeros_like(sum_w)
    if expected_views is not None:
        expected = per_cluster(torch.as_tensor(expected_views, dtype=dtype).expand_as(scores))
        n_views = count if view_ids is None else _distinct_views(cluster, view_ids, m, dtype)
        n_missing = (expected / count - n_views).clamp(min=0)

    merged_scores = sum_sw / (sum_w + n_missing * sum_w / count).clamp(min=1e-12)
    merged_boxes = sum_csw / sum_sw.clamp(min=1e-12)[:, None]

    # all-zero scores or weights leave no weighted mean: fall back to the plain mean
    degenerate = sum_sw <= 0
    if bool(degenerate.any()):
        plain = per_cluster(boxes) / count[:, None]
        merged_boxes = torch.where(degenerate[:, None], plain, merged_boxes)
    return merged_boxes, merged_scores


def _distinct_views(cluster: Tensor, view_ids: Tensor, m: int, dtype: torch.dtype) -> Tensor:
    """Number of distinct view ids per cluster -> float [M]."""
    views = torch.unique(view_ids, return_inverse=True)[1]
    pairs = torch.unique(cluster * (int(views.max()) + 1) + views)
    return torch.bincount(pairs // (int(views.max()) + 1), minlength=m).to(dtype)


def weighted_box_clustering(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    view_ids: Tensor,
    patch_weights: Tensor,
    expected_views: Tensor | float,
    iou_threshold: float,
    area_weighting: str = "sqrt",
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted box clustering of the predictions of several views, per class (2D and 3D).

    Args:
        boxes: float [N, 2*D] in corner format, all views together.
        scores: float [N] in [0, 1].
        labels: int [N] classes.
        view_ids: int [N] which view (model x mirror x tile) predicted each box.
        patch_weights: float [N] patch-centre factors (:func:`patch_center_weights`).
        expected_views: float [N] (or one number) views expected at each box's position.
        iou_threshold: a box joins a cluster at IoU > this with its top box.
        area_weighting: see :func:`area_weights`.
        block_size: boxes resolved together in the underlying NMS.

    Returns:
        ``(boxes [M, 2*D], scores [M], labels [M])``, one per cluster, sorted by descending
        consolidated score (ties by the order of the top boxes).
    """
    box_dim(boxes)
    cluster, tops, overlap = cluster_boxes(boxes, scores, labels, iou_threshold, block_size)
    if len(tops) == 0:
        return boxes.new_zeros((0, boxes.shape[1])), scores.new_zeros(0), labels.new_zeros(0)

    weights = overlap * area_weights(boxes, area_weighting) * patch_weights.to(overlap.dtype)
    expected = torch.as_tensor(expected_views, dtype=overlap.dtype, device=boxes.device)
    merged_boxes, merged_scores = merge_clusters(
        boxes, scores, weights, cluster, len(tops), view_ids, expected.expand(len(boxes))
    )
    order = torch.sort(merged_scores, descending=True, stable=True).indices
    return merged_boxes[order], merged_scores[order], labels[tops][order]
