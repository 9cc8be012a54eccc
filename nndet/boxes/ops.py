"""Elementwise and pairwise box operations in 2D and 3D.

Boxes follow nndet's convention (``documentation/architecture.md``): float
``[N, 2*D]`` as ``[lo_0, .., lo_{D-1}, hi_0, .., hi_{D-1}]`` in voxel coordinates, ``hi``
exclusive, so the extent along an axis is ``hi - lo`` (no ``+ 1``). Every function works on
any device and dtype and has no Python loop over boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def box_dim(boxes: Tensor) -> int:
    """Spatial dimension D of boxes ``[N, 2*D]``."""
    if boxes.shape[-1] not in (4, 6):
        raise ValueError(f"boxes must have 4 (2D) or 6 (3D) coordinates, got {boxes.shape[-1]}")
    return boxes.shape[-1] // 2


def box_area(boxes: Tensor) -> Tensor:
    """Area (2D) or volume (3D) of boxes ``[N, 2*D]`` -> ``[N]``; inverted boxes give 0."""
    d = box_dim(boxes)
    return (boxes[..., d:] - boxes[..., :d]).clamp(min=0).prod(dim=-1)


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-9) -> Tensor:
    """Pairwise IoU of boxes ``[N, 2*D]`` and ``[M, 2*D]`` -> float ``[N, M]`` in [0, 1]."""
    d = box_dim(boxes1)
    lo = torch.maximum(boxes1[:, None, :d], boxes2[None, :, :d])
    hi = torch.minimum(boxes1[:, None, d:], boxes2[None, :, d:])
    inter = (hi - lo).clamp(min=0).prod(dim=-1)
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    return inter / union.clamp(min=eps)


def paired_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-9) -> Tensor:
    """IoU of corresponding boxes: ``[N, 2*D]`` and ``[N, 2*D]`` -> ``[N]``.

    Notes:
        Exactly symmetric in its arguments (same float operations either way round), which
        NMS and WBC rely on to take the same decisions.
    """
    d = box_dim(boxes1)
    lo = torch.maximum(boxes1[:, :d], boxes2[:, :d])
    hi = torch.minimum(boxes1[:, d:], boxes2[:, d:])
    inter = (hi - lo).clamp(min=0).prod(dim=-1)
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter / union.clamp(min=eps)


def box_giou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Generalised IoU (Rezatofighi et al., 2019) of corresponding boxes -> ``[N]`` in [-1, 1].

    ``giou = iou - (hull - union) / hull`` where ``hull`` is the area (volume) of the smallest
    box enclosing both.

    Args:
        boxes1: float [N, 2*D] in corner format.
        boxes2: float [N, 2*D] in corner format, paired with ``boxes1`` row by row.
        eps: guards the divisions for empty boxes.
    """
    d = box_dim(boxes1)
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"box_giou pairs boxes: shapes {boxes1.shape} and {boxes2.shape} differ")
    lo = torch.maximum(boxes1[:, :d], boxes2[:, :d])
    hi = torch.minimum(boxes1[:, d:], boxes2[:, d:])
    inter = (hi - lo).clamp(min=0).prod(dim=-1)
    union = box_area(boxes1) + box_area(boxes2) - inter
    iou = inter / union.clamp(min=eps)

    hull_lo = torch.minimum(boxes1[:, :d], boxes2[:, :d])
    hull_hi = torch.maximum(boxes1[:, d:], boxes2[:, d:])
    hull = (hull_hi - hull_lo).clamp(min=0).prod(dim=-1)
    return iou - (hull - union) / hull.clamp(min=eps)


def giou_loss(pred: Tensor, target: Tensor, reduction: str = "sum") -> Tensor:
    """GIoU loss ``1 - giou`` of paired boxes ``[N, 2*D]``.

    Args:
        pred: float [N, 2*D] predicted boxes in corner format.
        target: float [N, 2*D] target boxes in corner format.
        reduction: ``"sum"``, ``"mean"`` (0 for N == 0) or ``"none"`` (returns ``[N]``).
    """
    loss = 1.0 - box_giou(pred, target)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    raise ValueError(f"giou_loss: unknown reduction {reduction!r}; use 'sum', 'mean' or 'none'")


def clip_boxes(boxes: Tensor, shape: Sequence[int]) -> Tensor:
    """Clip boxes ``[N, 2*D]`` to an image of ``shape`` (D ints): coordinates into [0, shape]."""
    d = box_dim(boxes)
    if len(shape) != d:
        raise ValueError(f"clip_boxes: {d}D boxes need a shape of {d} ints, got {list(shape)}")
    upper = torch.as_tensor(list(shape) * 2, dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), upper)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (long ``[K]``, ascending) of boxes whose every side is at least ``min_size``."""
    d = box_dim(boxes)
    sizes = boxes[:, d:] - boxes[:, :d]
    return torch.nonzero((sizes >= min_size).all(dim=1)).flatten()


def box_center(boxes: Tensor) -> Tensor:
    """Centres ``[N, D]`` of boxes ``[N, 2*D]``."""
    d = box_dim(boxes)
    return (boxes[..., :d] + boxes[..., d:]) / 2


def box_size(boxes: Tensor) -> Tensor:
    """Side lengths ``[N, D]`` (``hi - lo``) of boxes ``[N, 2*D]``."""
    d = box_dim(boxes)
    return boxes[..., d:] - boxes[..., :d]


def box_to_center_size(boxes: Tensor) -> Tensor:
    """Corner format ``[N, 2*D]`` -> ``[N, 2*D]`` as ``(centre_0.., size_0..)``."""
    return torch.cat([box_center(boxes), box_size(boxes)], dim=-1)


def center_size_to_box(center_size: Tensor) -> Tensor:
    """``(centre_0.., size_0..)`` ``[N, 2*D]`` -> corner format ``[N, 2*D]``."""
    d = box_dim(center_size)
    center, size = center_size[..., :d], center_size[..., d:]
    return torch.cat([center - size / 2, center + size / 2], dim=-1)
