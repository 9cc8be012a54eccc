"""A fold's validation: views, prediction files and metrics, and re-consolidation from views."""

from __future__ import annotations

import json

import numpy as np
import torch
from inference_fakes import BlobModel, identity_properties, make_plan, paint

from nndet.data.io import write_image
from nndet.data.predictions import read_case_prediction
from nndet.inference.consolidate import InferenceSettings, expected_views, kept_views
from nndet.inference.predictor import predict_case, predict_validation, write_validation
from nndet.inference.validation import write_predictions_from_views
from nndet.preprocessing.storage import CaseStore

CASES = {"a": [[4, 6, 12, 14], [40, 30, 52, 38]], "b": [[20, 20, 30, 34]], "c": []}


def _task(tmp_path):
    shape = [56, 48]
    store, labels = CaseStore(tmp_path / "preprocessed" / "2d"), tmp_path / "labelsTr"
    for case_id, boxes in CASES.items():
        data = paint(shape, boxes, values=[1.0 + (i % 2) for i in range(len(boxes))])
        instance_map = np.zeros(shape, dtype=np.int16)
        for i, box in enumerate(boxes):
            instance_map[box[0] : box[2], box[1] : box[3]] = i + 1
        props = identity_properties(shape)
        store.save_case(case_id, data, instance_map[None], props, [32, 32])
        write_image(instance_map, labels / f"{case_id}.nii.gz", props["original_geometry"])
        instances = {str(i + 1): i % 2 for i in range(len(boxes))}
        (labels / f"{case_id}.json").write_text(json.dumps({"instances": instances}))
    return store, labels


def test_validation_writes_views_predictions_and_metrics(tmp_path):
    store, labels = _task(tmp_path)
    fold = tmp_path / "retina_unet_2d" / "fold0"
    metrics = write_validation(
        [BlobModel()], make_plan(2, [32, 32]), store, ["a", "b", "c"], fold, labels,
        dataset_json={"labels": {"0": "dim", "1": "bright"}},
    )  # fmt: skip

    assert sorted(p.name for p in (fold / "val_views").iterdir()) == ["a.pt", "b.pt", "c.pt"]
    assert (fold / "val_predictions" / "predictions.csv").is_file()
    saved = json.loads((fold / "val_metrics.json").read_text())
    assert saved["num_cases"] == metrics["num_cases"] == 3
    assert metrics["AP@0.1"] == {"dim": 1.0, "bright": 1.0}

    record = read_case_prediction(fold / "val_predictions" / "a_boxes.json")
    assert record["image_shape"] == [56, 48]
    assert sorted(record["classes"]) == ["bright", "dim"]


def test_reconsolidating_stored_views_reproduces_the_prediction(tmp_path):
    store, labels = _task(tmp_path)
    fold = tmp_path / "fold0"
    plan = make_plan(2, [32, 32])
    predict_validation([BlobModel()], store, ["a", "b"], plan, fold, labels)
    first = read_case_prediction(fold / "val_predictions" / "a_boxes.json")

    other = tmp_path / "other"
    nms = InferenceSettings(method="nms", score_threshold=0.3)
    write_predictions_from_views(fold, ["a", "b"], nms, predictions_dir=other)
    second = read_case_prediction(other / "a_boxes.json")
    assert second["score_threshold"] == 0.3
    assert len(second["boxes"]) == len(first["boxes"]) == 2
    np.testing.assert_allclose(np.sort(second["boxes"], 0), np.sort(first["boxes"], 0), atol=1.0)


def test_expected_views_count_models_mirrors_and_tiles_covering_a_point():
    shape = [40, 56]
    plan = make_plan(2, [16, 32])
    result = predict_case(
        [BlobModel(), BlobModel()], paint(shape, []), identity_properties(shape), plan
    )
    views = result.views
    points = torch.tensor([[0.5, 0.5], [12.0, 20.0], [20.0, 30.0], [39.5, 55.5], [8.0, 24.0]])

    # oracle: loop over tiles, models and mirrors
    starts, size = views.tile_starts.tolist(), views.tile_size.tolist()
    oracle = []
    for p in points.tolist():
        tiles = sum(
            all(s <= c < s + t for c, s, t in zip(p, st, size, strict=True)) for st in starts
        )
        oracle.append(tiles * 2 * 4)
    counted = expected_views(points, views, kept_views(views, use_mirror=True))
    assert counted.tolist() == oracle
    assert len(set(oracle)) > 1  # the points are covered by different numbers of tiles

    no_mirror = expected_views(points, views, kept_views(views, use_mirror=False))
    assert no_mirror.tolist() == [n / 4 for n in oracle]
