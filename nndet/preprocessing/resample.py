"""Resampling of images (nnU-Net's cubic spline) and instance maps (one nearest-neighbour pass).

Both work on arrays with a leading channel axis and three spatial axes; 2D cases are passed
as one slice ``[C, 1, H, W]`` (as nnU-Net treats them), with a large spacing on the fake
axis so that nnU-Net resamples in-plane only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nnunetv2.preprocessing.resampling.default_resampling import (
    compute_new_shape,
    resample_data_or_seg_to_shape,
)

# nnU-Net's spacing for the fake slice axis of 2D data: far beyond its anisotropy threshold (3),
# so that the single slice is resized in-plane and never along the fake axis.
FAKE_SLICE_SPACING = 999.0


def target_spacing(
    spacing: Sequence[float], plan_spacing: Sequence[float], dim: int
) -> list[float]:
    """The spacing a case is resampled to, per stored axis.

    Args:
        spacing: the case's spacing per stored axis (``data_dim`` entries).
        plan_spacing: the plan's target spacing (``data_dim`` or ``dim`` entries).
        dim: the network's dimension. A 2D network on 3D data keeps each case's slice
            spacing (stored axis 0) unchanged, as nnU-Net's 2D configuration does.
    """
    data_dim = len(spacing)
    target = [float(s) for s in plan_spacing][-data_dim:]
    if dim < data_dim:
        target = [float(spacing[0])] + target[-dim:]
    if len(target) != data_dim:
        raise ValueError(f"plan spacing {list(plan_spacing)} does not fit a {data_dim}D case")
    return target


def new_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> list[int]:
    """nnU-Net's target shape ``round(shape * spacing / target)``, at least one voxel."""
    return [max(1, int(n)) for n in compute_new_shape(list(shape), list(spacing), list(target))]


def resample_images(
    data: np.ndarray, shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> np.ndarray:
    """Resample images with nnU-Net's defaults: cubic spline in-plane and, for anisotropic
    spacing (max/min > 3), nearest neighbour along the low-resolution axis.

    Args:
        data: float32 [C, Z, Y, X].
        shape: the output's spatial shape, 3 entries.
        spacing: current spacing per spatial axis; target: the spacing it aims at. They only
            decide whether (and along which axis) to resample separately.

    Returns:
        float32 [C, *shape].
    """
    if tuple(data.shape[1:]) == tuple(shape):
        return data
    return resample_data_or_seg_to_shape(
        data,
        list(shape),
        list(spacing),
        list(target),
        is_seg=False,
        order=3,
        order_z=0,
        force_separate_z=None,
    ).astype(np.float32, copy=False)


def nearest_indices(old: int, new: int) -> np.ndarray:
    """Source index of every output voxel along one axis: int64 [new].

    Output voxel ``j`` covers input ``[j * s, (j + 1) * s)`` with ``s = old / new`` (edges map
    to edges, as for the images); it takes the input voxel that holds its centre
    ``(j + 0.5) * s``, where input voxel ``i`` spans ``[i, i + 1)``.
    """
    centres = (np.arange(new, dtype=np.float64) + 0.5) * (old / new)
    return np.minimum(np.floor(centres).astype(np.int64), old - 1)


def resample_instance_map(seg: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample an instance (or class) map by nearest neighbour in one gather.

    Every label keeps its integer id; no per-label pass and no float copy is made (nnU-Net's
    order-1 segmentation resampling loops over labels, 30 instances cost ~100x).

    Args:
        seg: int [C, *spatial] (any number of spatial axes).
        shape: the output's spatial shape.

    Returns:
        int [C, *shape], same dtype as ``seg``.
    """
    if tuple(seg.shape[1:]) == tuple(shape):
        return seg
    index = np.ix_(
        np.arange(seg.shape[0]),
        *(nearest_indices(o, n) for o, n in zip(seg.shape[1:], shape, strict=True)),
    )
    return seg[index]
