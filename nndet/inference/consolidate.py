"""Consolidate the raw boxes of all views of a case into one set of boxes.

Works purely from stored views (:class:`~nndet.inference.views.CaseViews`), so the sweep can
re-run it with other :class:`InferenceSettings` without a network. The steps:

1. keep the views asked for (``use_mirror=False`` drops every flipped view);
2. clip the boxes to the case, drop small boxes and candidates below
   ``score_threshold_candidates``;
3. NMS within each view (``nms_iou_per_view``; ``None`` skips it);
4. expected views per box: the number of kept views whose tile holds the box centre;
5. weighted box clustering across views (``method="wbc"``) with patch-centre weights, or
   plain class-wise NMS (``method="nms"``);
6. a box lying mostly inside a larger box of its class is absorbed by it
   (``contained_ioa``): such boxes are the slivers of objects cut by a tile border, too
   small a part of the object to join its cluster;
7. for a ``2d`` plan on 3D data, the per-slice boxes are joined into 3D boxes;
8. the ``max_boxes_per_case`` best boxes are kept.

All boxes are in stored-case voxels (nndet's convention, ``hi`` exclusive).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nndet.boxes.consolidate import consolidate_slices
from nndet.boxes.nms import batched_nms
from nndet.boxes.ops import box_area, box_center, clip_boxes, remove_small_boxes
from nndet.boxes.pairs import BoxGrid, SortedKeys, candidate_pairs
from nndet.boxes.wbc import patch_center_weights, weighted_box_clustering
from nndet.inference.views import CaseViews

METHODS = ("wbc", "nms")
# Boxes kept per output box before absorbing slivers: a container ranked below 10x the output
# size is very unlikely to matter, and the pair search over all clusters of an untrained or
# noisy model (10^4 and more) would dominate consolidation.
_ABSORB_POOL = 10
_CHUNK = 4096  # boxes per containment test in expected_views: bounds a [chunk, T] matrix


@dataclass(frozen=True)
class InferenceSettings:
    """How the views of a case are consolidated; the sweep tunes these.

    Attributes:
        method: ``"wbc"`` (weighted box clustering across views, as in Retina U-Net and
            nnDetection) or ``"nms"`` (class-wise NMS over all views).
        ensemble_iou: IoU at which boxes of different views are clustered (WBC) or
            suppressed (NMS).
        nms_iou_per_view: IoU of the NMS inside each view before clustering; ``None`` skips it.
        min_box_size: boxes with a side below this (stored voxels) are dropped (nnDetection
            drops boxes under 0.01 voxels).
        score_threshold_candidates: candidates scoring below this are dropped first.
        use_mirror: use the views of flipped tiles (when they were predicted).
        contained_ioa: a box with at least this fraction of its area (volume) inside a larger
            box of its class is absorbed by it (:func:`absorb_contained`); ``None``: off.
        max_boxes_per_case: at most this many boxes per case, the best first (COCO's 100).
        max_candidates: at most this many boxes (the best, after the NMS inside each view)
            enter clustering. Bounds its cost where a weak model scatters overlapping
            low-score boxes over a large volume (a 3D case has hundreds of views).
        score_threshold: the operating point written to prediction files; it filters nothing.
    """

    method: str = "wbc"
    ensemble_iou: float = 0.4
    nms_iou_per_view: float | None = 0.5
    min_box_size: float = 0.01
    score_threshold_candidates: float = 0.0
    use_mirror: bool = True
    contained_ioa: float | None = 0.8
    max_boxes_per_case: int = 100
    max_candidates: int = 20_000
    score_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown inference settings {sorted(unknown)}: re-run nndet_sweep")
        return cls(**data)


def kept_views(views: CaseViews, use_mirror: bool) -> Tensor:
    """bool [V]: the views used; without mirroring only those of the identity mirror."""
    if use_mirror:
        return torch.ones(views.num_views, dtype=torch.bool)
    identity = [i for i, axes in enumerate(views.mirror_axes) if not axes]
    return torch.isin(views.view_mirror, torch.tensor(identity, dtype=torch.long))


def expected_views(centers: Tensor, views: CaseViews, view_mask: Tensor) -> Tensor:
    """How many kept views could have seen a point: those whose tile contains it.

    Args:
        centers: float [N, D] points (box centres) in stored-case voxels.
        views: the case's views (tile grid and view table).
        view_mask: bool [V], the views in use.

    Returns:
        float [N], at least 1 (a box regressed outside every tile still came from a view).
    """
    tiles = views.tile_boxes().to(centers.dtype)
    per_tile = torch.bincount(views.view_tile[view_mask], minlength=len(tiles)).to(centers.dtype)
    dim = centers.shape[1]
    counts = []
    for first in range(0, len(centers), _CHUNK):
        c = centers[first : first + _CHUNK, None, :]
        inside = ((c >= tiles[None, :, :dim]) & (c < tiles[None, :, dim:])).all(dim=-1)
        counts.append(inside.to(centers.dtype) @ per_tile)
    if not counts:
        return centers.new_zeros(0)
    return torch.cat(counts).clamp(min=1)


def _candidates(views: CaseViews, settings: InferenceSettings) -> Tensor:
    """Indices of the boxes that enter clustering (steps 1 to 3)."""
    use = kept_views(views, settings.use_mirror)[views.view_ids]
    use &= views.scores >= settings.score_threshold_candidates
    index = torch.nonzero(use).flatten()

    boxes = clip_boxes(views.boxes[index], views.image_shape.tolist())
    if views.net_dim < views.data_dim:  # one-slice boxes: only the in-plane sides count
        boxes = boxes[:, [1, 2, 4, 5]]
    index = index[remove_small_boxes(boxes, settings.min_box_size)]

    if settings.nms_iou_per_view is not None and len(index):
        # one NMS group per (view, class): views never suppress each other here
        groups = views.view_ids[index] * (int(views.labels.max()) + 1) + views.labels[index]
        boxes = clip_boxes(views.boxes[index], views.image_shape.tolist())
        index = index[batched_nms(boxes, views.scores[index], groups, settings.nms_iou_per_view)]
    if len(index) > settings.max_candidates:
        index = index[views.scores[index].topk(settings.max_candidates).indices]
    return index


def consolidate_views(
    views: CaseViews, settings: InferenceSettings | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One set of boxes from all views of a case.

    Args:
        views: the raw boxes of every view.
        settings: consolidation settings (default :class:`InferenceSettings`).

    Returns:
        ``(boxes float [M, 2*D], scores float [M], labels long [M])`` in stored-case voxels,
        sorted by descending score, ``M <= settings.max_boxes_per_case``.
    """
    settings = settings or InferenceSettings()
    index = _candidates(views, settings)
    boxes = clip_boxes(views.boxes[index], views.image_shape.tolist())
    scores, labels, view_ids = views.scores[index], views.labels[index], views.view_ids[index]

    if settings.method == "nms":
        keep = batched_nms(boxes, scores, labels, settings.ensemble_iou)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    else:
        mask = kept_views(views, settings.use_mirror)
        tiles = views.tile_boxes()[views.view_tile[view_ids]]
        weights = patch_center_weights(boxes, tiles)
        expected = expected_views(box_center(boxes), views, mask)
        boxes, scores, labels = weighted_box_clustering(
            boxes, scores, labels, view_ids, weights, expected, settings.ensemble_iou
        )

    if views.net_dim == views.data_dim:
        # only the best boxes can reach the output; absorbing costs a pair search over them
        pool = torch.sort(scores, descending=True, stable=True).indices
        pool = pool[: _ABSORB_POOL * settings.max_boxes_per_case]
        boxes, scores, labels = boxes[pool], scores[pool], labels[pool]
    # before joining slices: a 2D network's slivers are cut per slice
    keep, scores = absorb_contained(boxes, scores, labels, settings.contained_ioa)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if views.net_dim < views.data_dim:
        boxes, scores, labels = _join_slices(boxes, scores, labels, settings)

    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[: settings.max_boxes_per_case]
    return boxes[order], scores[order], labels[order]


def _join_slices(
    boxes: Tensor, scores: Tensor, labels: Tensor, settings: InferenceSettings
) -> tuple[Tensor, Tensor, Tensor]:
    """3D boxes from the one-slice boxes of a 2D network on 3D data (Retina U-Net's merge).

    Args:
        boxes: float [N, 6], each one slice thick (``[z, .., z + 1, ..]``), already
            consolidated across the views of its slice.

    Returns:
        ``(boxes float [M, 6], scores [M], labels [M])``.
    """
    plane = boxes[:, [1, 2, 4, 5]]
    # round, not floor: WBC's weighted mean of equal slice corners is off by float error
    slices = torch.round(boxes[:, 0]).long()
    return consolidate_slices(
        plane, scores, labels, slices, settings.ensemble_iou, method=settings.method
    )


def absorb_contained(
    boxes: Tensor, scores: Tensor, labels: Tensor, ioa: float | None
) -> tuple[Tensor, Tensor]:
    """Merge every box that lies mostly inside a larger box of its class into that box.

    A tile border cuts an object into a whole view and slivers; a sliver too small to join
    the object's cluster survives clustering as a box of its own, inside the object's box.
    It is dropped here, and the larger box keeps the higher of the two scores (the sliver is
    evidence for the same object).

    Args:
        boxes: float [N, 2*D]; scores: float [N]; labels: long [N].
        ioa: box ``i`` is absorbed by box ``j`` of its class when ``|i & j| / |i| >= ioa``
            and ``j`` is larger (equal volumes: the earlier box absorbs); ``None``: no-op.

    Returns:
        ``(keep bool [N], scores float [N])`` with the absorbed scores raised.

    Notes:
        Genuinely nested objects of one class are merged too: set ``ioa`` to ``None`` for
        data where an object can lie inside another's box.
    """
    keep = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    if ioa is None or len(boxes) < 2:
        return keep, scores
    dim = boxes.shape[1] // 2
    volume = box_area(boxes)
    groups = torch.unique(labels, return_inverse=True)[1]
    grid = BoxGrid(boxes)  # containment needs every overlapping pair: IoU threshold 0
    keys = grid.keys(boxes, groups)
    reference = SortedKeys(keys, torch.arange(len(boxes), device=boxes.device))
    out = scores.clone()
    for query, ref in candidate_pairs(grid, keys, reference):
        lo = torch.maximum(boxes[query, :dim], boxes[ref, :dim])
        hi = torch.minimum(boxes[query, dim:], boxes[ref, dim:])
        inside = (hi - lo).clamp(min=0).prod(dim=-1) >= ioa * volume[query].clamp(min=1e-9)
        larger = (volume[ref] > volume[query]) | ((volume[ref] == volume[query]) & (ref < query))
        hit = inside & larger & (query != ref)
        keep[query[hit]] = False
        out = out.scatter_reduce(0, ref[hit], scores[query[hit]], reduce="amax")
    return keep, out
