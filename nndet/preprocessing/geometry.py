"""Map boxes between the original image and the stored (preprocessed) case, both ways.

Preprocessing crops a raw case to its nonzero region, transposes its axes and resamples it
to a target shape (``documentation/preprocessing.md``). A box in nndet's convention
(``[lo_0, .., lo_{D-1}, hi_0, .., hi_{D-1}]``, continuous voxel coordinates, ``hi``
exclusive) maps through these steps exactly, because the resampling maps voxel edges to
voxel edges (output voxel ``j`` covers input ``[j * s, (j + 1) * s)`` with
``s = shape_after_crop / shape_after_resample`` per axis)::

    x_stored[k] = (x_raw[transpose[k]] - crop_lo[transpose[k]]) / s[k]

Every function reads the case's properties (the ``CASE.json`` written by preprocessing, or
the properties :func:`nndet.preprocessing.preprocess.preprocess_image_for_inference`
returns): ``crop_bbox`` (raw axes), ``transpose``, ``shape_after_crop`` and
``shape_after_resample`` (stored axes) and ``original_geometry["shape"]`` (raw axes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _as_boxes(boxes: Tensor | np.ndarray | Sequence, dim: int) -> tuple[Tensor, torch.dtype]:
    """Boxes as float64 ``[N, 2*D]`` for exact arithmetic, and the dtype to return."""
    boxes = torch.as_tensor(np.asarray(boxes) if not isinstance(boxes, Tensor) else boxes)
    out_dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
    boxes = boxes.to(torch.float64).reshape(-1, 2 * dim)
    return boxes, out_dtype


def _scale(props: Mapping[str, Any]) -> Tensor:
    """Stored voxels per cropped raw voxel, per stored axis: float64 ``[D]``."""
    before = torch.tensor(props["shape_after_crop"], dtype=torch.float64)
    after = torch.tensor(props["shape_after_resample"], dtype=torch.float64)
    return after / before


def clip_boxes(boxes: Tensor, shape: Sequence[int]) -> Tensor:
    """Clip boxes ``[N, 2*D]`` to an image of ``shape`` (``[0, shape[k]]`` on axis ``k``)."""
    dim = len(shape)
    upper = torch.tensor(list(shape) * 2, dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), upper.expand(boxes.shape[0], 2 * dim))


def boxes_to_stored(
    boxes_raw: Tensor | np.ndarray | Sequence, props: Mapping[str, Any], clip: bool = True
) -> Tensor:
    """Map boxes from the original image to the stored case.

    Args:
        boxes_raw: float [N, 2*D] in nndet's convention, along the raw array axes.
        props: the case's preprocessing properties (see the module docstring).
        clip: clip the result to the stored image (parts outside the crop are cut off).

    Returns:
        float [N, 2*D] along the stored axes; the dtype of ``boxes_raw`` when it is floating,
        else float32.
    """
    transpose = list(props["transpose"])
    dim = len(transpose)
    boxes, out_dtype = _as_boxes(boxes_raw, dim)
    crop_lo = torch.tensor([lo for lo, _ in props["crop_bbox"]], dtype=torch.float64)

    # Shift into the crop, then reorder the corners' axes as the arrays were transposed.
    shifted = boxes - torch.cat([crop_lo, crop_lo])
    order = transpose + [d + dim for d in transpose]
    stored = shifted[:, order] * torch.cat([_scale(props)] * 2)

    if clip:
        stored = clip_boxes(stored, props["shape_after_resample"])
    return stored.to(out_dtype)


def boxes_to_original(
    boxes_stored: Tensor | np.ndarray | Sequence, props: Mapping[str, Any], clip: bool = True
) -> Tensor:
    """Map boxes from the stored case back to the original image: inverse of
    :func:`boxes_to_stored`.

    Args:
        boxes_stored: float [N, 2*D] in nndet's convention, along the stored axes.
        props: the case's preprocessing properties (see the module docstring).
        clip: clip the result to the original image.

    Returns:
        float [N, 2*D] along the raw array axes; the dtype of ``boxes_stored`` when it is
        floating, else float32.

    Notes:
        The two maps are exact inverses for boxes inside the crop; a box that reached
        outside the crop was clipped on the way in and comes back clipped.
    """
    transpose = list(props["transpose"])
    dim = len(transpose)
    boxes, out_dtype = _as_boxes(boxes_stored, dim)
    crop_lo = torch.tensor([lo for lo, _ in props["crop_bbox"]], dtype=torch.float64)

    # Undo the scaling on the stored axes, then put every stored axis back at its raw place.
    unscaled = boxes / torch.cat([_scale(props)] * 2)
    inverse = [transpose.index(d) for d in range(dim)]
    order = inverse + [d + dim for d in inverse]
    raw = unscaled[:, order] + torch.cat([crop_lo, crop_lo])

    if clip:
        raw = clip_boxes(raw, props["original_geometry"]["shape"])
    return raw.to(out_dtype)


def stored_spacing(props: Mapping[str, Any]) -> list[float]:
    """Effective spacing (mm) of the stored case per stored axis.

    It differs slightly from the plan's target spacing because the stored shape is rounded
    to whole voxels.
    """
    spacing = [props["original_spacing"][d] for d in props["transpose"]]
    scale = _scale(props).tolist()
    return [float(sp / sc) for sp, sc in zip(spacing, scale, strict=True)]
