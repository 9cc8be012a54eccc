"""Anchor boxes for every position of every detection level.

The planner chooses A anchor sizes per detection level (``Plan.anchors``) and the network
fixes the stride of each level (``Plan.level_strides()``); this module places them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class AnchorGenerator:
    """Anchors of all detection levels, in the order the detection heads emit predictions.

    Args:
        sizes: per level, A anchor sizes ``[A][D]`` in input voxels (the same A on every
            level, e.g. ``Plan.anchors``).
        strides: per level, D ints: input voxels per feature voxel (``Plan.level_strides()``).

    The anchors of feature voxel ``i`` (covering input voxels ``[i*s, (i+1)*s)``) are centred
    at ``i*s + s/2``. Ordering within a level: position-major in C order over the feature
    map, then anchor index, which matches a head output ``[B, A*X, *spatial]`` permuted to
    ``[B, *spatial, A, X]`` and flattened.
    """

    def __init__(
        self, sizes: Sequence[Sequence[Sequence[float]]], strides: Sequence[Sequence[int]]
    ):
        if len(sizes) != len(strides) or not sizes:
            raise ValueError(
                f"AnchorGenerator needs sizes and strides for the same levels, got "
                f"{len(sizes)} size lists and {len(strides)} strides"
            )
        num_anchors = {len(level) for level in sizes}
        if len(num_anchors) != 1:
            raise ValueError(f"every level needs the same number of anchors, got {num_anchors}")
        dims = {len(a) for level in sizes for a in level} | {len(s) for s in strides}
        if len(dims) != 1 or dims.pop() not in (2, 3):
            raise ValueError("anchor sizes and strides must all have D = 2 or 3 entries")
        self.sizes = [[[float(v) for v in a] for a in level] for level in sizes]
        self.strides = [[int(v) for v in s] for s in strides]
        self.dim = len(self.strides[0])

    @property
    def num_anchors_per_location(self) -> int:
        """A: anchors per feature position, equal on every level."""
        return len(self.sizes[0])

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    def level_anchors(
        self,
        level: int,
        feature_shape: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Anchors ``[prod(feature_shape) * A, 2*D]`` of one level, in corner format."""
        if len(feature_shape) != self.dim:
            raise ValueError(
                f"level {level}: feature shape {list(feature_shape)} is not {self.dim}D"
            )
        axes = [
            (torch.arange(n, device=device, dtype=dtype) + 0.5) * s
            for n, s in zip(feature_shape, self.strides[level], strict=True)
        ]
        centers = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, self.dim)
        half = torch.as_tensor(self.sizes[level], device=device, dtype=dtype) / 2  # [A, D]

        # [P, 1, D] -/+ [1, A, D] -> [P, A, 2*D], position-major then anchor index
        anchors = torch.cat([centers[:, None] - half[None], centers[:, None] + half[None]], -1)
        return anchors.reshape(-1, 2 * self.dim)

    def __call__(
        self,
        feature_shapes: Sequence[Sequence[int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        """Anchors of every level.

        Args:
            feature_shapes: per level, the D spatial sizes of its feature map.
            device, dtype: of the returned tensors.

        Returns:
            One float tensor ``[prod(feature_shapes[l]) * A, 2*D]`` per level.
        """
        if len(feature_shapes) != self.num_levels:
            raise ValueError(
                f"got {len(feature_shapes)} feature shapes for {self.num_levels} anchor levels"
            )
        return [
            self.level_anchors(level, shape, device=device, dtype=dtype)
            for level, shape in enumerate(feature_shapes)
        ]
