"""Box mapping between original and stored geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nndet.preprocessing.geometry import boxes_to_original, boxes_to_stored, stored_spacing


def _props(crop, transpose, shape_after_crop, shape_after_resample, shape, spacing):
    return {
        "crop_bbox": crop,
        "transpose": transpose,
        "shape_after_crop": shape_after_crop,
        "shape_after_resample": shape_after_resample,
        "original_geometry": {"shape": shape},
        "original_spacing": spacing,
    }


PROPS_3D = _props(
    crop=[[2, 30], [5, 105], [0, 80]],
    transpose=[2, 0, 1],  # stored axes: raw x, raw z, raw y
    shape_after_crop=[80, 28, 100],
    shape_after_resample=[64, 70, 75],
    shape=[32, 110, 80],
    spacing=[3.0, 0.7, 0.8],
)
PROPS_2D = _props(
    crop=[[10, 90], [0, 64]],
    transpose=[1, 0],
    shape_after_crop=[64, 80],
    shape_after_resample=[96, 50],
    shape=[100, 64],
    spacing=[0.5, 0.9],
)


def _random_boxes(props, n, seed):
    """Boxes inside the crop of ``props``, along the raw axes."""
    gen = torch.Generator().manual_seed(seed)
    crop = torch.tensor(props["crop_bbox"], dtype=torch.float64)
    a = crop[:, 0] + torch.rand(n, len(crop), generator=gen, dtype=torch.float64) * (
        crop[:, 1] - crop[:, 0]
    )
    b = crop[:, 0] + torch.rand(n, len(crop), generator=gen, dtype=torch.float64) * (
        crop[:, 1] - crop[:, 0]
    )
    return torch.cat([torch.minimum(a, b), torch.maximum(a, b)], dim=1)


@pytest.mark.parametrize("props", [PROPS_3D, PROPS_2D], ids=["3d", "2d"])
def test_raw_to_stored_to_raw_is_identity_inside_the_crop(props):
    boxes = _random_boxes(props, 50, seed=0)
    back = boxes_to_original(boxes_to_stored(boxes, props), props)
    torch.testing.assert_close(back, boxes, atol=1e-9, rtol=0)


@pytest.mark.parametrize("props", [PROPS_3D, PROPS_2D], ids=["3d", "2d"])
def test_stored_to_raw_to_stored_is_identity(props):
    shape = torch.tensor(props["shape_after_resample"], dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    lo = torch.rand(20, len(shape), generator=gen, dtype=torch.float64) * shape / 2
    boxes = torch.cat([lo, lo + shape / 2], dim=1)
    back = boxes_to_stored(boxes_to_original(boxes, props), props)
    torch.testing.assert_close(back, boxes, atol=1e-9, rtol=0)


def test_crop_corner_maps_to_stored_origin_and_far_corner_to_stored_shape():
    crop = np.array(PROPS_3D["crop_bbox"])
    whole_crop = torch.tensor([list(crop[:, 0]) + list(crop[:, 1])], dtype=torch.float64)
    stored = boxes_to_stored(whole_crop, PROPS_3D)
    expected = [0, 0, 0] + PROPS_3D["shape_after_resample"]
    assert stored.tolist() == [[float(v) for v in expected]]


def test_one_box_by_hand_with_transpose_and_scaling():
    # raw box z 4..6, y 15..25, x 8..40; crop lo (2, 5, 0); stored axes (x, z, y)
    # scales: x 64/80 = 0.8, z 70/28 = 2.5, y 75/100 = 0.75
    box = torch.tensor([[4.0, 15.0, 8.0, 6.0, 25.0, 40.0]])
    stored = boxes_to_stored(box, PROPS_3D)
    expected = [[8 * 0.8, 2 * 2.5, 10 * 0.75, 40 * 0.8, 4 * 2.5, 20 * 0.75]]
    torch.testing.assert_close(stored, torch.tensor(expected))


def test_boxes_outside_are_clipped_to_the_image():
    box = torch.tensor([[-5.0, -5.0, 200.0, 300.0]])
    stored = boxes_to_stored(box, PROPS_2D)
    assert stored.tolist() == [[0.0, 0.0, 96.0, 50.0]]
    raw = boxes_to_original(torch.tensor([[-10.0, -10.0, 500.0, 500.0]]), PROPS_2D)
    assert raw.tolist() == [[0.0, 0.0, 100.0, 64.0]]


def test_numpy_and_integer_input_give_float_tensors_and_empty_input_works():
    out = boxes_to_stored(np.array([[10, 0, 20, 32]]), PROPS_2D)
    assert out.dtype == torch.float32 and out.shape == (1, 4)
    assert boxes_to_original(torch.zeros(0, 6), PROPS_3D).shape == (0, 6)


def test_stored_spacing_follows_transpose_and_shape_ratio():
    spacing = stored_spacing(PROPS_3D)
    # stored axis 0 is raw x: 0.8 mm * 80 / 64
    assert spacing == pytest.approx([0.8 * 80 / 64, 3.0 * 28 / 70, 0.7 * 100 / 75])
