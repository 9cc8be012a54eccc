"""Augmentation: crop sizes, exact instance ids, image and map moving together."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nndet.training.augmentation import (
    TrainingAugmentation,
    augmentation_params,
    sampling_patch_size,
)


def _seed(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return np.random.default_rng(seed)


def _ball_map(shape: tuple[int, ...], num: int, seed: int) -> torch.Tensor:
    """An int16 instance map ``[1, *shape]`` with ``num`` balls of radius 5 at random places."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    out = np.zeros(shape, dtype=np.int16)
    for i in range(1, num + 1):
        centre = [rng.integers(5, s - 5) for s in shape]
        out[sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= 25] = i
    return torch.from_numpy(out)[None]


def test_crop_equals_patch_without_rotation_and_scaling():
    assert sampling_patch_size([33, 40], (0.0, 0.0), 1.0) == [33, 40]
    assert sampling_patch_size([8, 40, 41], (0.0, 0.0, 0.0), 1.0) == [8, 40, 41]


def test_crop_holds_a_rectangle_rotated_by_45_degrees_and_keeps_parity():
    crop = sampling_patch_size([100, 101], (math.pi / 4, math.pi / 4), 1.0)
    # the 45-degree extent is (100 + 101) / sqrt(2) = 142.1 on both axes, rounded up to the
    # parity of each edge
    assert crop == [144, 143]
    scaled = sampling_patch_size([100, 101], (0.0, 0.0), 1.4)
    assert scaled == [140, 143]


def test_anisotropic_3d_patch_rotates_in_plane_only():
    params = augmentation_params([16, 96, 96])
    assert params.in_plane and params.rotation[1:] == (0.0, 0.0)
    crop = sampling_patch_size([16, 96, 96], params.rotation, 1.0)
    assert crop[0] == 16 and crop[1] >= 96 * math.sqrt(2)
    assert not augmentation_params([32, 96, 96]).in_plane


@pytest.mark.parametrize("patch", [[48, 40], [20, 24, 28]])
def test_rotated_and_scaled_patch_never_reads_outside_its_crop(patch):
    # An image of ones stays ones exactly when no sample point falls into the zero padding.
    augmentation = TrainingAugmentation(patch, p_rotation=1, p_scaling=1, intensity=False)
    rng = _seed(0)
    for _ in range(8):
        crop, transform = augmentation.draw(rng)
        assert crop == augmentation.largest_crop
        out = transform(image=torch.ones(1, *crop), segmentation=torch.ones(1, *crop).short())
        assert out["image"].shape == (1, *patch)
        assert torch.allclose(out["image"], torch.ones(1, *patch), atol=1e-5)
        assert bool((out["segmentation"] == 1).all())


@pytest.mark.parametrize("patch", [[48, 40], [20, 24, 28]])
def test_instance_ids_stay_exact_integers_under_augmentation(patch):
    augmentation = TrainingAugmentation(patch, p_rotation=1, p_scaling=1)
    rng = _seed(1)
    crop = augmentation.largest_crop
    seg = _ball_map(tuple(crop), num=12, seed=1)
    for _ in range(6):
        _, transform = augmentation.draw(rng)
        out = transform(image=torch.rand(2, *crop), segmentation=seg.clone())
        assert out["segmentation"].dtype == torch.int16
        assert out["segmentation"].shape == (1, *patch)
        assert set(out["segmentation"].unique().tolist()) <= set(seg.unique().tolist())


def test_image_and_instance_map_are_transformed_together():
    # The image is the object mask; after rotation, scaling and mirroring the (bilinear) image
    # and the (nearest) map must still agree away from object borders.
    patch = [64, 64]
    augmentation = TrainingAugmentation(patch, p_rotation=1, p_scaling=1, intensity=False)
    rng = _seed(2)
    crop = augmentation.largest_crop
    seg = _ball_map(tuple(crop), num=20, seed=2)
    for _ in range(6):
        _, transform = augmentation.draw(rng)
        out = transform(image=(seg > 0).float(), segmentation=seg.clone())
        agree = ((out["image"] > 0.5) == (out["segmentation"] > 0)).float().mean()
        assert agree > 0.97


def test_spatial_mode_probabilities_follow_the_settings():
    patch = [32, 32]
    never = TrainingAugmentation(patch, p_rotation=0, p_scaling=0)
    rng = np.random.default_rng(3)
    assert all(never.draw(rng)[0] == patch for _ in range(50))

    default = TrainingAugmentation(patch)
    plain = sum(default.draw(rng)[0] == patch for _ in range(2000)) / 2000
    assert abs(plain - 0.8 * 0.8) < 0.05


def test_same_seed_gives_the_same_augmentation():
    patch = [16, 24, 24]
    augmentation = TrainingAugmentation(patch, p_rotation=1, p_scaling=1)
    crop = augmentation.largest_crop
    image = torch.rand(1, *crop)
    seg = _ball_map(tuple(crop), num=5, seed=3)

    results = []
    for _ in range(2):
        rng = _seed(4)
        _, transform = augmentation.draw(rng)
        results.append(transform(image=image.clone(), segmentation=seg.clone()))
    assert torch.equal(results[0]["image"], results[1]["image"])
    assert torch.equal(results[0]["segmentation"], results[1]["segmentation"])
