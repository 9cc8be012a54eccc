"""Data augmentation of training patches, composed from batchgeneratorsv2 transforms.

Image and instance map are transformed jointly: the instance map travels as the
``segmentation`` channel and is resampled nearest-neighbour, so ids stay exact integers and
no transform loops over labels (batchgeneratorsv2's default ``mode_seg='bilinear'`` resamples
once per label: 30 objects cost 30 grid samples). Boxes are derived afterwards from the
transformed map (:mod:`nndet.training.targets`).

The transforms and probabilities follow nnU-Net v2's default training pipeline (Isensee et
al., 2021), without elastic deformation (off by default in nnU-Net too). Random draws use
both ``numpy.random`` and ``torch``'s global generators (that is how batchgeneratorsv2 draws);
:mod:`nndet.training.sampling` gives each loader its own state of both.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import (
    SpatialTransform,
    create_affine_matrix_2d,
    create_affine_matrix_3d,
)
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

# nnU-Net's threshold for "dummy 2D" augmentation: a 3D patch whose largest edge is more than
# three times its axis-0 edge is augmented in-plane (rotation about axis 0 only, no
# low-resolution simulation along axis 0).
ANISOTROPY_THRESHOLD = 3.0


@dataclass(frozen=True)
class AugmentationParams:
    """Ranges of the spatial augmentation of one patch size (angles in radians).

    ``rotation[d]`` is the largest rotation angle about axis ``d`` (3D; in 2D only the last
    entry is used, as batchgeneratorsv2 does); ``scaling`` is the range of the sampling-grid
    scale (above 1 zooms out). ``in_plane`` marks an anisotropic 3D patch.
    """

    rotation: tuple[float, ...]
    scaling: tuple[float, float]
    in_plane: bool
    mirror_axes: tuple[int, ...]


def augmentation_params(patch_size: Sequence[int]) -> AugmentationParams:
    """nnU-Net's default spatial ranges for a patch of ``len(patch_size)`` dimensions.

    2D: rotation of up to 180 degrees. 3D: up to 30 degrees about every axis, or, for an
    anisotropic patch (see ``ANISOTROPY_THRESHOLD``), up to 180 degrees about axis 0 only.
    Scaling 0.7-1.4 and mirroring along every axis in both cases.
    """
    dim = len(patch_size)
    in_plane = dim == 3 and max(patch_size) / patch_size[0] > ANISOTROPY_THRESHOLD
    if dim == 2:
        rotation = (math.pi, math.pi)
    elif in_plane:
        rotation = (math.pi, 0.0, 0.0)
    else:
        rotation = (math.pi / 6,) * 3
    return AugmentationParams(
        rotation=rotation,
        scaling=(0.7, 1.4),
        in_plane=in_plane,
        mirror_axes=tuple(range(dim)),
    )


class _PerAxisRange:
    """A batchgeneratorsv2 random scalar: uniform in ``[-r_d, r_d]`` for axis ``d``.

    A class rather than a closure so that transforms stay picklable for worker processes.
    """

    def __init__(self, ranges: Sequence[float]):
        self.ranges = tuple(float(r) for r in ranges)

    def __call__(self, image=None, dim: int | None = None, **_) -> float:
        limit = self.ranges[dim if dim is not None else 0]
        return float(np.random.uniform(-limit, limit)) if limit > 0 else 0.0


def sampling_patch_size(
    patch_size: Sequence[int], rotation: Sequence[float], max_scale: float
) -> list[int]:
    """The crop that still fills ``patch_size`` after rotation and scaling about its centre.

    The spatial transform samples the final patch on a grid rotated by up to ``rotation[d]``
    about axis ``d`` and scaled by up to ``max_scale``; the crop must hold every grid point.
    Corners of the final patch are rotated over 5-degree steps inside the ranges (the widest
    extent of a square lies at 45 degrees, not at the largest angle) and scaled.

    Returns:
        ``len(patch_size)`` edges, each at least the final edge and of the same parity, so
        that the final patch sits on whole voxels in the centre of the crop.
    """
    dim = len(patch_size)
    half = np.array(patch_size, dtype=float) / 2
    corners = np.array(list(itertools.product(*[(-h, h) for h in half])))  # [2**D, D]

    def angles(limit: float) -> np.ndarray:
        return np.linspace(-limit, limit, math.ceil(2 * limit / math.radians(5)) + 1)

    # 2D rotates about the last entry only, as batchgeneratorsv2 does.
    if dim == 2:
        matrices = [create_affine_matrix_2d(a, [1.0, 1.0]) for a in angles(rotation[-1])]
    else:
        grid = itertools.product(*[angles(r) for r in rotation])
        matrices = [create_affine_matrix_3d(list(a), [1.0, 1.0, 1.0]) for a in grid]
    extent = half.copy()
    for matrix in matrices:
        extent = np.maximum(extent, np.abs(corners @ matrix.T).max(axis=0))

    size = np.ceil(2 * extent * max(max_scale, 1.0) - 1e-6).astype(int)
    size = np.maximum(size, patch_size)
    size += (size - np.array(patch_size)) % 2  # same parity as the final patch
    return [int(s) for s in size]


class TrainingAugmentation:
    """Augmentation of training samples, and the crop each sample needs.

    Rotation and scaling (each with probability 0.2, as in nnU-Net) need a crop larger than
    the final patch; the other 64% of samples need none. So the spatial decision is drawn
    first, by :meth:`draw`, and the sampler crops exactly what that decision needs: in 3D
    the full crop for rotation and scaling is up to 20 times the final patch, and reading it
    for every sample would dominate the loading time.

    Args:
        patch_size: the final patch, ``D`` edges.
        params: spatial ranges (default :func:`augmentation_params` of ``patch_size``).
        p_rotation: probability of a rotation.
        p_scaling: probability of a scaling.
        intensity: False leaves out noise, blur, brightness, contrast, low resolution and
            gamma (spatial transforms and mirroring only).
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        params: AugmentationParams | None = None,
        p_rotation: float = 0.2,
        p_scaling: float = 0.2,
        intensity: bool = True,
    ):
        self.patch_size = [int(p) for p in patch_size]
        self.params = params or augmentation_params(patch_size)
        self.p_rotation = p_rotation
        self.p_scaling = p_scaling

        rest = _intensity_transforms(self.params) if intensity else []
        if self.params.mirror_axes:
            rest.append(MirrorTransform(allowed_axes=tuple(self.params.mirror_axes)))
        self._modes: dict[tuple[bool, bool], tuple[list[int], BasicTransform]] = {}
        for rotate, scale in itertools.product((False, True), repeat=2):
            rotation = self.params.rotation if rotate else (0.0,) * len(self.params.rotation)
            crop = sampling_patch_size(patch_size, rotation, self.params.scaling[1] if scale else 1)
            spatial = [self._spatial(rotate, scale)] if rotate or scale else []
            self._modes[rotate, scale] = (crop, ComposeTransforms(spatial + rest))

    def draw(self, rng: np.random.Generator) -> tuple[list[int], BasicTransform]:
        """Decide rotation and scaling of one sample.

        Returns:
            ``crop_size`` (``D`` edges, the final patch in its centre) and the transform to
            call as ``transform(image=float [C, *crop_size], segmentation=int [1, *crop_size])``;
            it returns both at ``patch_size``.
        """
        rotate = bool(rng.random() < self.p_rotation)
        scale = bool(rng.random() < self.p_scaling)
        return self._modes[rotate, scale]

    @property
    def largest_crop(self) -> list[int]:
        """The crop of a sample that is rotated and scaled."""
        return self._modes[True, True][0]

    def _spatial(self, rotate: bool, scale: bool) -> BasicTransform:
        return SpatialTransform(
            patch_size=tuple(self.patch_size),
            patch_center_dist_from_border=0,
            random_crop=False,  # the sampler placed the patch; cut it from the crop's centre
            p_rotation=float(rotate),
            rotation=_PerAxisRange(self.params.rotation),
            p_scaling=float(scale),
            scaling=self.params.scaling,
            p_synchronize_scaling_across_axes=1,
            p_elastic_deform=0,
            mode_seg="nearest",  # exact ids, one grid sample for all objects
            border_mode_seg="zeros",
        )


def _intensity_transforms(params: AugmentationParams) -> list[BasicTransform]:
    """nnU-Net's intensity augmentation, in its order and with its probabilities."""
    return [
        RandomTransform(
            GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1),
            apply_probability=0.1,
        ),
        RandomTransform(
            GaussianBlurTransform(blur_sigma=(0.5, 1.0), p_per_channel=0.5),
            apply_probability=0.2,
        ),
        RandomTransform(
            MultiplicativeBrightnessTransform(
                multiplier_range=(0.75, 1.25), synchronize_channels=False
            ),
            apply_probability=0.15,
        ),
        RandomTransform(
            ContrastTransform(
                contrast_range=BGContrast((0.75, 1.25)),
                preserve_range=True,
                synchronize_channels=False,
            ),
            apply_probability=0.15,
        ),
        RandomTransform(
            SimulateLowResolutionTransform(
                scale=(0.5, 1.0),
                synchronize_channels=False,
                synchronize_axes=True,
                ignore_axes=(0,) if params.in_plane else None,
                p_per_channel=0.5,
            ),
            apply_probability=0.25,
        ),
        _gamma(invert=True, probability=0.1),
        _gamma(invert=False, probability=0.3),
    ]


def _gamma(invert: bool, probability: float) -> BasicTransform:
    """nnU-Net's gamma augmentation, on the inverted image when ``invert``."""
    return RandomTransform(
        GammaTransform(
            gamma=(0.7, 1.5),
            p_invert_image=1.0 if invert else 0.0,
            synchronize_channels=False,
            p_per_channel=1,
            p_retain_stats=1,
        ),
        apply_probability=probability,
    )
