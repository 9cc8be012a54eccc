"""One case through crop, transpose, normalisation and resampling."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
from prep_helpers import balls_case, geometry, make_plan

from nndet.data.instances import instance_boxes
from nndet.planning.plan import Normalization
from nndet.preprocessing.geometry import boxes_to_original, boxes_to_stored
from nndet.preprocessing.preprocess import preprocess_arrays, preprocess_image_for_inference
from nndet.preprocessing.resample import resample_instance_map


def _run(image, instance_map, spacing, plan, classes=None, case_id="case0"):
    geo = {**geometry(spacing), "shape": list(instance_map.shape)}
    classes = classes or {i: i % 2 for i in range(1, int(instance_map.max()) + 1)}
    return preprocess_arrays(case_id, image[None].copy(), instance_map.copy(), classes, geo, plan)


def _half_voxel_tolerance(props):
    """Half a voxel of the coarser grid (original or stored) per raw axis, for [lo.., hi..]."""
    scale = np.array(props["shape_after_crop"]) / np.array(props["shape_after_resample"])
    per_raw = np.empty(len(scale))
    per_raw[props["transpose"]] = np.maximum(scale, 1.0) / 2
    return np.concatenate([per_raw, per_raw]) + 1e-6


CASE_3D = dict(shape=(15, 44, 40), centres=[(7, 14, 12), (7, 28, 26)], radii=[3.5, 5], border=2)


def test_3d_anisotropic_boxes_map_back_to_raw_boxes_within_half_a_voxel():
    image, imap = balls_case(**CASE_3D, seed=0)
    # upsampled on every axis, transposed, cropped: half a raw voxel is the bound
    plan = make_plan([1.6, 0.7, 0.6], transpose=[0, 2, 1])
    data, seg, props = _run(image, imap, [3.0, 0.8, 0.8], plan)
    raw = instance_boxes(imap)
    back = boxes_to_original(np.array(props["boxes"], dtype=float), props).numpy()
    expected = np.array([raw[i] for i in props["ids"]], dtype=float)
    assert props["crop_bbox"][1] == [2, 42] and props["transpose"] == [0, 2, 1]
    assert np.all(np.abs(back - expected) <= 0.5)
    assert data.shape == (1, *props["shape_after_resample"]) and seg.shape == data.shape
    assert data.dtype == np.float32 and seg.dtype == np.int16


def test_downsampled_boxes_map_back_within_half_a_stored_voxel():
    # cuboids: the extent of a ball along one axis also shrinks when the other axes are
    # downsampled (its caps fall between samples), a cuboid's extent does not
    image, _ = balls_case(**CASE_3D, seed=1)
    imap = np.zeros(image.shape, np.int32)
    imap[2:11, 11:18, 9:16] = 1
    imap[3:13, 23:34, 21:32] = 2
    plan = make_plan([3.0, 1.5, 1.3], transpose=[1, 2, 0])
    _, _, props = _run(image, imap, [2.0, 0.8, 0.8], plan)
    raw = instance_boxes(imap)
    back = boxes_to_original(np.array(props["boxes"], dtype=float), props).numpy()
    expected = np.array([raw[i] for i in props["ids"]], dtype=float)
    assert np.all(np.abs(back - expected) <= _half_voxel_tolerance(props))


def test_stored_boxes_are_the_boxes_of_the_stored_map_and_close_to_mapped_raw_boxes():
    image, imap = balls_case(**CASE_3D, seed=2)
    plan = make_plan([2.0, 0.5, 0.9], transpose=[2, 1, 0])
    _, seg, props = _run(image, imap, [3.0, 0.8, 0.8], plan)
    assert props["boxes"] == [instance_boxes(seg[0])[i] for i in props["ids"]]
    raw = instance_boxes(imap)
    mapped = boxes_to_stored(np.array([raw[i] for i in props["ids"]], dtype=float), props)
    scale = np.array(props["shape_after_resample"]) / np.array(props["shape_after_crop"])
    tol = np.concatenate([np.maximum(scale, 1) / 2] * 2) + 1e-6
    assert np.all(np.abs(mapped.numpy() - np.array(props["boxes"])) <= tol)


def test_2d_case_is_stored_as_2d_with_boxes_mapping_back():
    image, imap = balls_case((50, 61), [(20, 20), (32, 44)], [6, 8], border=4, seed=3)
    plan = make_plan([0.4, 0.5], transpose=[1, 0])
    data, seg, props = _run(image, imap, [0.6, 0.6], plan)
    assert data.ndim == 3 and seg.ndim == 3 and len(props["boxes"][0]) == 4
    raw = instance_boxes(imap)
    back = boxes_to_original(np.array(props["boxes"], dtype=float), props).numpy()
    assert np.all(np.abs(back - np.array([raw[i] for i in props["ids"]])) <= 0.5)


def test_2d_plan_on_3d_data_keeps_each_cases_slice_spacing():
    image, imap = balls_case(**CASE_3D, seed=4)
    plan = make_plan([1.0, 0.5, 0.5], dim=2, patch_size=[16, 16])
    _, _, props = _run(image, imap, [3.0, 0.8, 0.8], plan)
    assert props["target_spacing"] == [3.0, 0.5, 0.5]
    assert props["shape_after_resample"][0] == props["shape_after_crop"][0]


def test_outside_the_nonzero_mask_the_stored_map_is_minus_one():
    image, imap = balls_case((12, 30, 30), [(6, 15, 15)], [2], border=3, seed=5)
    image[6, 8:12, 8:12] = 0  # a hole inside the body stays part of the mask (hole filling)
    _, seg, props = _run(image, imap, [1.0, 1.0, 1.0], make_plan([1.0, 1.0, 1.0]))
    assert props["crop_bbox"] == [[3, 9], [3, 27], [3, 27]]
    assert set(np.unique(seg)) == {0, 1}
    image[3, 3:6, 3:6] = 0  # a zero corner of the body is outside the mask
    _, seg, _ = _run(image, imap, [1.0, 1.0, 1.0], make_plan([1.0, 1.0, 1.0]))
    assert seg[0, 0, 0, 0] == -1 and seg[0, 0, 5, 5] == 0


def test_ct_normalisation_clips_and_scales_with_plan_statistics():
    image, imap = balls_case((10, 20, 20), [(5, 10, 10)], [3], border=0, seed=6)
    ct = Normalization("ct", mean=100.0, std=50.0, lower=50.0, upper=250.0)
    data, _, _ = _run(image, imap, [1.0] * 3, make_plan([1.0] * 3, normalization=[ct]))
    expected = (np.clip(image, 50, 250) - 100) / 50
    np.testing.assert_allclose(data[0], expected, rtol=1e-5, atol=1e-5)


def test_zscore_normalisation_uses_the_cases_own_statistics():
    image, imap = balls_case((10, 20, 20), [(5, 10, 10)], [3], border=0, seed=7)
    data, _, _ = _run(image * 3 + 7, imap, [1.0] * 3, make_plan([1.0] * 3))
    assert abs(data.mean()) < 1e-4 and abs(data.std() - 1) < 1e-4
    np.testing.assert_allclose(data[0], (image - image.mean()) / image.std(), atol=1e-4)


def test_vanished_and_split_objects_are_reported_with_case_and_id(caplog):
    image, imap = balls_case((9, 40, 40), [(4, 10, 10)], [4], border=0, seed=8)
    imap[4, 30, 31] = 2  # one voxel: gone when sampling every second voxel
    # object 3: two blobs joined by a one-voxel-thin bridge that downsampling misses
    imap[4, 30:34, 4:8] = 3
    imap[4, 30:34, 13:17] = 3
    imap[4, 32, 8:13] = 3
    plan = make_plan([1.0, 2.0, 2.0])
    with caplog.at_level(logging.WARNING):
        _, seg, props = _run(image, imap, [1.0] * 3, plan, {1: 0, 2: 1, 3: 0}, "lung_7")
    assert props["lost_instances"] == [2] and props["split_instances"] == [3]
    assert props["ids"] == [1, 3] and "2" not in props["instances"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("lung_7" in m and "object 2" in m and "vanished" in m for m in messages)
    assert any("lung_7" in m and "object 3" in m and "split" in m for m in messages)


def test_an_object_already_in_pieces_in_the_raw_map_is_not_reported_as_split():
    image, imap = balls_case((5, 20, 20), [(2, 5, 5)], [2], border=0, seed=9)
    imap[2, 14:17, 14:17] = 1  # a second piece of object 1
    _, _, props = _run(image, imap, [1.0] * 3, make_plan([1.0] * 3), {1: 0})
    assert props["split_instances"] == []


def test_object_locations_lie_inside_their_objects():
    image, imap = balls_case(**CASE_3D, seed=10)
    _, seg, props = _run(image, imap, [3.0, 0.8, 0.8], make_plan([2.0, 1.0, 1.0]))
    for obj_id, points in props["object_locations"].items():
        assert 0 < len(points) <= 50
        assert all(seg[(0, *p)] == int(obj_id) for p in points)


class _NoComparison(np.ndarray):
    """An array that fails on any per-label comparison such as ``seg == label``."""

    def __eq__(self, other):
        raise AssertionError("instance map compared per label")

    __ne__ = __eq__


def test_instance_map_resampling_is_one_nearest_neighbour_pass_matching_nnunet():
    rng = np.random.default_rng(11)
    # odd input sizes: no output centre falls on an input voxel border, so no ties
    seg = rng.integers(0, 300, size=(1, 13, 17, 19)).astype(np.int32)
    shape = [7, 30, 11]
    ours = resample_instance_map(seg.view(_NoComparison), shape)
    reference = resample_data_or_seg_to_shape(
        seg, shape, [1, 1, 1], [1, 1, 1], is_seg=True, order=0, force_separate_z=False
    )
    np.testing.assert_array_equal(np.asarray(ours), reference)
    assert ours.dtype == np.int32


def test_inference_preprocessing_matches_training_and_leaves_input_unchanged():
    image, imap = balls_case(**CASE_3D, seed=12)
    plan = make_plan([2.0, 0.6, 0.7], transpose=[0, 2, 1])
    data, _, props = _run(image, imap, [3.0, 0.8, 0.8], plan)
    images = image[None].copy()
    geo = {k: v for k, v in geometry([3.0, 0.8, 0.8]).items() if k != "shape"}
    data_inf, props_inf = preprocess_image_for_inference(images, geo, plan)
    assert props_inf["original_geometry"]["shape"] == list(image.shape)
    np.testing.assert_array_equal(data_inf, data)
    np.testing.assert_array_equal(images[0], image)
    for key in ("crop_bbox", "transpose", "shape_after_crop", "shape_after_resample"):
        assert props_inf[key] == props[key]


def test_a_case_that_does_not_fit_the_plan_is_named_in_the_error():
    image, imap = balls_case((5, 20, 20), [(2, 5, 5)], [2], border=0, seed=13)
    with pytest.raises(ValueError, match="case0.*2D"):
        _run(image, imap, [1.0] * 3, make_plan([1.0, 1.0]))
