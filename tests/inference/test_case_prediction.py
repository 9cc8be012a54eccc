"""Case prediction: sliding windows, mirroring, ensembling and consolidation with a fake model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_fakes import BlobModel, identity_properties, make_plan, paint

from nndet.boxes.ops import box_iou
from nndet.inference.consolidate import InferenceSettings, consolidate_views
from nndet.inference.predictor import predict_case


def _match_once(boxes: torch.Tensor, truth: list[list[int]], min_iou: float = 0.7) -> None:
    """Every true box has exactly one prediction overlapping it, and that one fits well."""
    iou = box_iou(boxes.double(), torch.tensor(truth, dtype=torch.float64))
    assert len(boxes) == len(truth), (boxes, truth)
    assert ((iou > 0.1).sum(dim=0) == 1).all(), iou
    assert (iou.max(dim=0).values > min_iou).all(), iou


@pytest.mark.parametrize("mirror", [False, True])
def test_object_straddling_two_tiles_is_found_once(mirror):
    # Tiles of 32 with overlap 0.5 on 96 start at 0, 32, 64 (and 16, 48 on axis 1 of 80):
    # the object [28, 38) on axis 0 crosses the border of tiles [0, 32) and [32, 64).
    shape, truth = [96, 80], [[28, 20, 38, 30]]
    data = paint(shape, truth)
    plan = make_plan(2, [32, 32])
    result = predict_case([BlobModel()], data, identity_properties(shape), plan, mirror=mirror)

    cut = result.views.boxes[:, 2] - result.views.boxes[:, 0] < 10
    assert cut.any()  # some views only saw part of the object
    _match_once(result.boxes, truth)


def test_straddling_object_in_3d_with_two_models_is_found_once():
    shape, truth = [40, 48, 48], [[14, 20, 10, 22, 28, 20], [2, 30, 30, 8, 36, 38]]
    data = paint(shape, truth, values=[1.0, 2.0])
    plan = make_plan(3, [24, 24, 24])
    models = [BlobModel(slope=0.2), BlobModel(slope=0.5, jitter=1.0)]
    result = predict_case(models, data, identity_properties(shape), plan, mirror=True)
    _match_once(result.boxes, truth)
    assert sorted(result.labels.tolist()) == [0, 1]


def test_mirrored_views_map_back_onto_the_object():
    shape, truth = [48, 40], [[5, 22, 13, 35]]
    data = paint(shape, truth)
    result = predict_case(
        [BlobModel(slope=0.6)], data, identity_properties(shape), make_plan(2, [48, 40])
    )
    views = result.views
    assert views.mirror_axes == [[], [0], [1], [0, 1]]
    # one tile: every mirror sees the whole object and must map it back onto it exactly
    assert views.boxes.tolist() == [[float(c) for c in truth[0]]] * 4
    mirror_of_box = views.view_mirror[views.view_ids]
    assert len(set(views.scores.tolist())) > 1, "the fake must score mirrors differently"
    assert sorted(mirror_of_box.tolist()) == [0, 1, 2, 3]
    _match_once(result.boxes, truth, min_iou=0.99)


def test_wbc_across_views_gives_one_box_per_object():
    rng = np.random.default_rng(3)
    shape = [64, 64]
    truth = [[6, 6, 14, 12], [30, 28, 36, 40], [50, 8, 58, 16], [44, 50, 60, 60]]
    data = paint(shape, truth, values=[1.0, 2.0, 1.0, 2.0])
    data += rng.uniform(0, 0.3, size=data.shape).astype(np.float32)
    models = [BlobModel(slope=s, jitter=j) for s, j in [(0.1, 0.0), (0.4, 1.0), (0.2, 0.5)]]
    result = predict_case(models, data, identity_properties(shape), make_plan(2, [32, 32]))
    assert result.views.num_views == 3 * 4 * 9
    assert len(result.views.boxes) > 4 * 10  # many raw boxes per object ...
    _match_once(result.boxes, truth)  # ... one consolidated box each


def test_consolidation_without_mirrors_ignores_mirror_views():
    shape, truth = [48, 40], [[5, 22, 13, 35]]
    result = predict_case(
        [BlobModel()], paint(shape, truth), identity_properties(shape), make_plan(2, [48, 40])
    )
    views = result.views
    # a ghost that only the flipped views "saw"
    flipped = torch.nonzero(views.view_mirror != 0).flatten()
    ghost = torch.tensor([[30.0, 2.0, 40.0, 12.0]]).repeat(len(flipped), 1)
    views.boxes = torch.cat([views.boxes, ghost])
    views.scores = torch.cat([views.scores, torch.full((len(flipped),), 0.9)])
    views.labels = torch.cat([views.labels, torch.zeros(len(flipped), dtype=torch.long)])
    views.view_ids = torch.cat([views.view_ids, flipped])

    with_mirror = consolidate_views(views, InferenceSettings(use_mirror=True))[0]
    without = consolidate_views(views, InferenceSettings(use_mirror=False))[0]
    assert len(with_mirror) == 2
    _match_once(without, truth, min_iou=0.99)


def test_boxes_are_mapped_to_the_original_image():
    # the stored case is the raw image cropped by [4, 10) per axis, transposed, and
    # resampled 2x along stored axis 1
    raw_shape, raw_box = [60, 50], [20, 14, 30, 20]
    stored_box = [14 - 10, 2 * (20 - 4), 20 - 10, 2 * (30 - 4)]
    stored_shape = [36, 2 * 50]
    props = {
        "transpose": [1, 0],
        "crop_bbox": [[4, 54], [10, 46]],
        "shape_after_crop": [36, 50],
        "shape_after_resample": stored_shape,
        "original_geometry": {"shape": raw_shape},
    }
    result = predict_case(
        [BlobModel()], paint(stored_shape, [stored_box]), props, make_plan(2, [32, 64])
    )
    _match_once(result.boxes, [raw_box], min_iou=0.99)


def test_large_volume_streams_tiles_without_reading_it_whole():
    class GuardedVolume:
        """A case that only answers reads of at most one tile."""

        def __init__(self, array, tile_voxels):
            self.array, self.shape, self.tile_voxels = array, array.shape, tile_voxels

        def __getitem__(self, index):
            part = self.array[index]
            assert part.size <= self.tile_voxels, "read more than one tile"
            return part

    shape, truth = [48, 160, 160], [[20, 70, 70, 26, 78, 80]]
    volume = GuardedVolume(paint(shape, truth), tile_voxels=32**3)
    model = BlobModel()
    result = predict_case(
        [model], volume, identity_properties(shape), make_plan(3, [32, 32, 32]), mirror=False
    )
    assert max(s[0] for s in model.batch_shapes) == 3  # the plan's batch size
    assert result.views.num_views == 2 * 9 * 9
    _match_once(result.boxes, truth)


def test_2d_plan_on_3d_data_predicts_slices_and_joins_them_into_3d_boxes():
    shape, truth = [10, 40, 48], [[2, 6, 8, 7, 16, 18], [4, 24, 30, 9, 34, 40]]
    data = paint(shape, truth, values=[1.0, 2.0])
    plan = make_plan(2, [32, 32], data_dim=3)
    model = BlobModel()
    result = predict_case([model], data, identity_properties(shape), plan)

    assert {s[1:] for s in model.batch_shapes} == {(1, 32, 32)}  # the network sees 2D slices
    assert result.views.net_dim == 2 and result.views.data_dim == 3
    slice_extent = result.views.boxes[:, 3] - result.views.boxes[:, 0]
    assert torch.all(slice_extent == 1)
    _match_once(result.boxes, truth, min_iou=0.8)
    assert sorted(result.labels.tolist()) == [0, 1]

    # a minimum box size above one voxel applies in-plane, not to the one-slice extent
    boxes = consolidate_views(result.views, InferenceSettings(min_box_size=4.0))[0]
    assert len(boxes) == 2


def test_boxes_map_back_through_real_preprocessing():
    # raw image: zero border (cropped away), spacing 0.5 along axis 1 (resampled to 1.0),
    # stored transposed; the object must come back where it was in the raw image
    from dataclasses import replace

    from nndet.preprocessing.preprocess import preprocess_image_for_inference

    raw = np.zeros((1, 60, 100), dtype=np.float32)
    raw[0, 6:54, 10:90] = 0.1
    raw[0, 20:30, 40:60] = 1.0
    geometry = {"spacing": [1.0, 0.5], "origin": [0.0, 0.0], "direction": [1.0, 0, 0, 1.0],
                "shape": [60, 100]}  # fmt: skip
    plan = replace(make_plan(2, [32, 32]), transpose=[1, 0], spacing=[1.0, 1.0])
    data, props = preprocess_image_for_inference(raw, geometry, plan)
    assert data.shape[1:] == (40, 48)  # cropped, transposed, resampled

    result = predict_case([BlobModel(threshold=2.0)], data, props, plan)
    _match_once(result.boxes, [[20, 40, 30, 60]], min_iou=0.8)


def test_a_real_detector_runs_through_the_sliding_window():
    from tiny_model_folder import tiny_plan_2d

    from nndet.model.detector import RetinaUNet

    plan = tiny_plan_2d()
    torch.manual_seed(0)
    network = RetinaUNet.from_plan(plan)
    with torch.no_grad():  # make the untrained network propose a few boxes everywhere
        network.classifier.out.bias.fill_(-10.0)
        network.classifier.out.bias[0] = 1.0
    shape = [48, 40]
    data = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    result = predict_case([network], data, identity_properties(shape), plan)

    views = result.views
    assert views.num_views == 4 * 2 * 2  # mirrors x tiles
    assert len(views.boxes) > 0 and torch.isfinite(views.boxes).all()
    assert 0 < len(result.boxes) <= InferenceSettings().max_boxes_per_case
    assert (result.boxes[:, :2] >= 0).all()
    assert (result.boxes[:, 2:] <= torch.tensor(shape, dtype=result.boxes.dtype)).all()
    assert torch.all(result.scores[:-1] >= result.scores[1:])


def test_only_the_best_candidates_enter_clustering():
    shape, truth = [48, 40], [[5, 22, 13, 35]]
    result = predict_case(
        [BlobModel()], paint(shape, truth), identity_properties(shape), make_plan(2, [48, 40])
    )
    views = result.views
    # many weak boxes scattered over the image, as an undertrained network gives them
    rng = torch.Generator().manual_seed(0)
    low = torch.rand(200, 2, generator=rng) * torch.tensor([40.0, 30.0])
    clutter = torch.cat([low, low + 6], dim=1)
    views.boxes = torch.cat([views.boxes, clutter])
    views.scores = torch.cat([views.scores, torch.full((200,), 0.06)])
    views.labels = torch.cat([views.labels, torch.zeros(200, dtype=torch.long)])
    views.view_ids = torch.cat([views.view_ids, torch.zeros(200, dtype=torch.long)])
    settings = InferenceSettings(nms_iou_per_view=None, contained_ioa=None)

    capped = consolidate_views(views, InferenceSettings(**{**settings.to_dict(),
                                                           "max_candidates": 4}))  # fmt: skip
    assert len(consolidate_views(views, settings)[0]) > 1  # the clutter survives uncapped
    _match_once(capped[0], truth, min_iou=0.99)  # only the object's 4 views are left
