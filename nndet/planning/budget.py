"""Patch size, batch size and topology for a hardware budget.

The budget model is nnU-Net v2's: memory (GPU) or time (CPU) grows with
``batch_size * feature-map elements per sample``, and a target offers a *capacity* of such
elements. The patch starts as large as the budget could plausibly allow (aspect ratio from the
spacing, clipped to the median case) and shrinks along the axis largest relative to the median
shape until two samples fit; the batch size then fills the capacity, capped so that one batch
covers at most 5% of the dataset's voxels. Constants and their calibration are documented in
``documentation/planning.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from nndet.planning.plan import Topology
from nndet.planning.topology import (
    build_topology,
    detection_levels,
    head_feature_map_size,
    shape_divisor,
    unet_feature_map_size,
)

logger = logging.getLogger(__name__)

# nnU-Net v2's references for 8 GB: 560e6 elements per sample at batch 2 (3D) and 85e6 at
# batch 12 (2D), i.e. a capacity of batch * elements of 1.12e9 and 1.02e9.
GPU_CAPACITY_8GB = {3: 560e6 * 2, 2: 85e6 * 12}
REFERENCE_GPU_GB = 8.0
# CPU capacities: with 2 threads a PlainConvUNet forward+backward took ~0.3 s for 3.2e7
# elements in 2D (8 x 160^2, width 16) and for 1.8e7 in 3D (2 x 32x64x64, width 8); see
# documentation/planning.md. Heads, loss and loading come on top, so a step stays well
# under a second.
CPU_CAPACITY = {2: 3.0e7, 3: 1.8e7}
# Starting patch volume before shrinking (nnU-Net uses 256^3 and 2048^2 on the GPU).
INITIAL_PATCH_VOXELS = {"gpu": {2: 2048**2, 3: 256**3}, "cpu": {2: 128**2, 3: 64**3}}
MIN_BATCH_SIZE = 2  # nnU-Net's minimum
MAX_SHRINK_STEPS = 500  # a guard: shrinking converges in a few dozen steps
MAX_BATCH_SIZE = {"gpu": {2: 10_000, 3: 10_000}, "cpu": {2: 8, 3: 2}}
MAX_DATASET_FRACTION = 0.05  # one batch sees at most 5% of the dataset's voxels, as nnU-Net
MAX_FEATURES = {2: 512, 3: 320}  # nnU-Net's caps
BASE_FEATURES = {"gpu": {2: 32, 3: 32}, "cpu": {2: 16, 3: 8}}
MAX_FEATURES_CPU = {2: 256, 3: 128}
MAX_HEAD_WIDTH = 128  # nndet.model's head width rule (nnDetection's 128)


@dataclass(frozen=True)
class Budget:
    """What the plan must fit: ``target`` "gpu" (with ``gpu_memory_gb``) or "cpu"."""

    target: str = "gpu"
    gpu_memory_gb: float = 8.0

    def __post_init__(self) -> None:
        if self.target not in ("gpu", "cpu"):
            raise ValueError(f"target must be 'gpu' or 'cpu', got {self.target!r}")
        if self.target == "gpu" and not self.gpu_memory_gb > 0:
            raise ValueError(f"gpu_memory_gb must be positive, got {self.gpu_memory_gb}")

    def capacity(self, dim: int) -> float:
        """Feature-map elements one batch may hold."""
        if self.target == "cpu":
            return CPU_CAPACITY[dim]
        return GPU_CAPACITY_8GB[dim] * self.gpu_memory_gb / REFERENCE_GPU_GB

    def base_features(self, dim: int) -> int:
        return BASE_FEATURES[self.target][dim]

    def max_features(self, dim: int) -> int:
        return MAX_FEATURES_CPU[dim] if self.target == "cpu" else MAX_FEATURES[dim]


@dataclass(frozen=True)
class Fit:
    """Result of :func:`fit_patch_and_batch`."""

    patch_size: list[int]
    batch_size: int
    topology: Topology
    detection_levels: list[int]
    estimate: int  # feature-map elements per sample (U-Net + heads)
    capacity: float


def initial_patch(spacing: list[float], median_shape: list[float], voxels: float) -> list[int]:
    """A patch of about ``voxels`` voxels, isotropic in mm, clipped to the median shape."""
    inverse = 1.0 / np.asarray(spacing, dtype=np.float64)
    scale = (voxels / np.prod(inverse)) ** (1.0 / len(spacing))
    patch = np.round(inverse * scale)
    return [int(max(1, min(p, m))) for p, m in zip(patch, median_shape, strict=True)]


def fit_patch_and_batch(
    spacing: list[float],
    median_shape: list[float],
    dataset_voxels: float,
    in_channels: int,
    num_classes: int,
    num_anchors: int,
    budget: Budget,
) -> Fit:
    """Largest patch (then batch) whose estimate fits the budget.

    Args:
        spacing: D target spacings of the network's axes.
        median_shape: D median case shape (voxels at the target spacing).
        dataset_voxels: voxels of all cases at the target spacing (for the 5% cap).
        in_channels: modalities.
        num_classes: object classes K (the segmentation head has K + 1 outputs).
        num_anchors: anchors per position A.
        budget: the target.
    """
    dim = len(spacing)
    capacity = budget.capacity(dim)
    patch = initial_patch(spacing, median_shape, INITIAL_PATCH_VOXELS[budget.target][dim])
    topology, patch = build_topology(
        spacing, patch, budget.base_features(dim), budget.max_features(dim)
    )
    estimate = _estimate(topology, patch, in_channels, num_classes, num_anchors)

    for _ in range(MAX_SHRINK_STEPS):
        if estimate * MIN_BATCH_SIZE <= capacity:
            break
        smaller = _shrink(spacing, patch, median_shape)
        if smaller is None:
            logger.warning("the smallest patch %s still exceeds the budget; planning it", patch)
            break
        topology, patch = build_topology(
            spacing, smaller, budget.base_features(dim), budget.max_features(dim)
        )
        estimate = _estimate(topology, patch, in_channels, num_classes, num_anchors)

    batch = int(capacity // estimate)
    batch = min(batch, MAX_BATCH_SIZE[budget.target][dim])
    covers_5_percent = round(dataset_voxels * MAX_DATASET_FRACTION / np.prod(patch, dtype=float))
    batch = max(min(batch, covers_5_percent), MIN_BATCH_SIZE)
    levels = detection_levels(topology, patch)
    return Fit(patch, batch, topology, levels, estimate, capacity)


def _estimate(
    topology: Topology,
    patch: list[int],
    in_channels: int,
    num_classes: int,
    num_anchors: int,
) -> int:
    """Feature-map elements per sample: the U-Net (with its K+1 segmentation) plus heads."""
    levels = detection_levels(topology, patch)
    unet = unet_feature_map_size(topology, patch, in_channels, num_classes + 1)
    # the model's heads are as wide as the finest detection level, at most 128 channels
    width = min(MAX_HEAD_WIDTH, topology.features_per_stage[min(levels)])
    heads = head_feature_map_size(topology, patch, levels, width, num_anchors, num_classes)
    return unet + heads


def _shrink(spacing: list[float], patch: list[int], median_shape: list[float]) -> list[int] | None:
    """Cut the axis largest relative to the median shape by one stride step; None at the floor.

    The step is the stride divisor of the *reduced* patch, so that no valid size is skipped
    (a 256 edge divisible by 64 may still shrink to 224), as nnU-Net does.
    """
    ratios = [p / m for p, m in zip(patch, median_shape, strict=True)]
    for axis in np.argsort(ratios)[::-1]:
        trial = list(patch)
        trial[axis] -= shape_divisor(spacing, patch)[axis]
        if trial[axis] < 1:
            continue
        step = shape_divisor(spacing, trial)[axis]
        candidate = list(patch)
        candidate[axis] -= step
        if candidate[axis] >= 1:
            return candidate
    return None
