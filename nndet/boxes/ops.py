"""Elementwise and pairwise box operations in 2D and 3D.

Boxes follow nndet's convention (``documentation/architecture.md``): float ``[N, 2*D]`` as
``[lo_0, .., lo_{D-1}, hi_0, .., hi_{D-1}]`` in voxel coordinates, ``hi`` exclusive, so the
extent along an axis is ``hi - lo``.
"""

from __future__ import annotations

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
