"""The prediction file format: CASE_boxes.json and predictions.csv."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from nndet.data.io import image_from_array
from nndet.data.predictions import (
    box_centers_world,
    case_id_of,
    read_case_prediction,
    write_case_prediction,
    write_predictions_csv,
)


def _rotation_3d(angle: float) -> list[float]:
    c, s = np.cos(angle), np.sin(angle)
    # a rotation about z then a flip of y: neither identity nor axis-aligned
    matrix = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, -1.0, 1.0])
    return matrix.ravel().tolist()


GEOMETRY_3D = {
    "spacing": [2.5, 0.7, 0.9],  # array order (z, y, x)
    "origin": [-12.0, 33.5, 7.25],
    "direction": _rotation_3d(0.4),
}


def test_center_world_matches_simpleitk_continuous_index_3d():
    boxes = np.array([[1.0, 2.0, 3.0, 5.0, 10.0, 4.0], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    image = image_from_array(np.zeros((8, 12, 6), np.float32), GEOMETRY_3D)

    centers = box_centers_world(boxes, GEOMETRY_3D)

    for box, center in zip(boxes, centers, strict=True):
        index = ((box[:3] + box[3:]) / 2 - 0.5)[::-1]
        expected = image.TransformContinuousIndexToPhysicalPoint(index.tolist())
        np.testing.assert_allclose(center, expected, atol=1e-9)


def test_center_world_of_single_voxel_box_is_that_voxels_physical_point():
    image = image_from_array(np.zeros((8, 12, 6), np.float32), GEOMETRY_3D)
    voxel_zyx = (3, 7, 2)
    box = np.array([[*voxel_zyx, *(v + 1 for v in voxel_zyx)]], dtype=float)

    center = box_centers_world(box, GEOMETRY_3D)[0]

    expected = image.TransformIndexToPhysicalPoint([int(v) for v in voxel_zyx[::-1]])
    np.testing.assert_allclose(center, expected, atol=1e-9)


def test_center_world_2d_matches_simpleitk():
    geometry = {"spacing": [0.5, 2.0], "origin": [3.0, -4.0], "direction": [0.0, 1.0, 1.0, 0.0]}
    image = image_from_array(np.zeros((10, 20), np.float32), geometry)
    box = np.array([[2.0, 4.0, 6.0, 9.0]])

    center = box_centers_world(box, geometry)[0]

    expected = image.TransformContinuousIndexToPhysicalPoint([6.5 - 0.5, 4.0 - 0.5])
    np.testing.assert_allclose(center, expected, atol=1e-9)


def test_write_then_read_roundtrips_and_sorts_by_score(tmp_path):
    boxes = torch.tensor([[0.0, 0, 0, 2, 2, 2], [1, 1, 1, 4, 5, 6], [3, 3, 3, 5, 5, 5]])
    scores = torch.tensor([0.2, 0.9, 0.5])
    labels = torch.tensor([0, 1, 1])

    path = write_case_prediction(
        tmp_path, "case7", boxes, scores, labels, {0: "benign", 1: "malignant"},
        GEOMETRY_3D, (8, 12, 6), score_threshold=0.4,
    )  # fmt: skip
    record = read_case_prediction(path)

    assert path == tmp_path / "case7_boxes.json"
    assert case_id_of(path) == "case7"
    np.testing.assert_allclose(record["scores"], [0.9, 0.5, 0.2])
    np.testing.assert_allclose(record["boxes"], boxes.numpy()[[1, 2, 0]])
    assert record["labels"].tolist() == [1, 1, 0]
    assert record["classes"] == ["malignant", "malignant", "benign"]
    assert record["dim"] == 3 and record["image_shape"] == [8, 12, 6]
    assert record["spacing"] == GEOMETRY_3D["spacing"]
    assert record["score_threshold"] == 0.4
    np.testing.assert_allclose(
        record["center_world"], box_centers_world(boxes.numpy()[[1, 2, 0]], GEOMETRY_3D)
    )


def test_file_has_the_documented_keys(tmp_path):
    path = write_case_prediction(
        tmp_path / "x.json", "c", np.zeros((1, 4)) + [0, 0, 1, 1], [0.5], [0], ["a"],
        {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0, 0, 1]}, (4, 4),
    )  # fmt: skip
    data = json.loads(path.read_text())

    assert path.name == "x.json"
    assert set(data) == {
        "case_id", "dim", "image_shape", "spacing", "origin", "direction",
        "score_threshold", "boxes",
    }  # fmt: skip
    assert set(data["boxes"][0]) == {"box", "score", "label", "class", "center_world"}
    assert data["score_threshold"] is None


def test_empty_prediction_roundtrips(tmp_path):
    path = write_case_prediction(
        tmp_path, "empty", np.zeros((0, 6)), [], [], None, GEOMETRY_3D, (8, 12, 6)
    )
    record = read_case_prediction(path)

    assert record["boxes"].shape == (0, 6)
    assert record["scores"].shape == (0,) and record["labels"].shape == (0,)


def test_mismatched_lengths_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="case c"):
        write_case_prediction(
            tmp_path, "c", np.zeros((2, 6)), [0.1], [0, 0], None, GEOMETRY_3D, (8, 12, 6)
        )


def test_reading_a_file_without_boxes_names_the_file(tmp_path):
    path = tmp_path / "bad_boxes.json"
    path.write_text(json.dumps({"case_id": "bad", "dim": 3}))

    with pytest.raises(ValueError, match="bad_boxes.json lacks boxes"):
        read_case_prediction(path)


def test_reading_a_box_of_wrong_length_names_the_file(tmp_path):
    path = tmp_path / "bad_boxes.json"
    entry = {"box": [0, 0, 1, 1], "score": 0.3, "label": 0}
    path.write_text(json.dumps({"case_id": "bad", "dim": 3, "boxes": [entry]}))

    with pytest.raises(ValueError, match="bad_boxes.json"):
        read_case_prediction(path)


def test_csv_has_one_row_per_box_with_documented_columns(tmp_path):
    geometry_2d = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0, 0, 1]}
    for case_id, count in (("a", 2), ("b", 0), ("c", 1)):
        boxes = np.array([[i, i, i + 2, i + 3] for i in range(count)], dtype=float)
        write_case_prediction(
            tmp_path, case_id, boxes.reshape(-1, 4), np.linspace(0.9, 0.1, count),
            [1] * count, ["x", "y"], geometry_2d, (10, 10),
        )  # fmt: skip
    records = [read_case_prediction(tmp_path / f"{c}_boxes.json") for c in "abc"]

    path = write_predictions_csv(tmp_path, records)
    with path.open() as f:
        rows = list(csv.DictReader(f))

    assert path.name == "predictions.csv"
    assert list(rows[0]) == [
        "case_id", "label", "class", "score", "lo0", "lo1", "hi0", "hi1",
        "center_x", "center_y", "center_z",
    ]  # fmt: skip
    assert [r["case_id"] for r in rows] == ["a", "a", "c"]
    assert rows[1]["class"] == "y" and float(rows[1]["hi1"]) == 4.0
    # box [1, 1, 3, 4]: centre (2, 2.5) in array order -> index (1.5, 2) -> x = 2, y = 1.5
    assert float(rows[1]["center_x"]) == 2.0 and float(rows[1]["center_y"]) == 1.5
    assert rows[1]["center_z"] == ""


def test_csv_rejects_mixed_dimensions(tmp_path):
    a = {"case_id": "a", "dim": 2, "boxes": np.zeros((0, 4))}
    b = {"case_id": "b", "dim": 3, "boxes": np.zeros((0, 6))}
    with pytest.raises(ValueError, match="mix dimensions"):
        write_predictions_csv(tmp_path, [a, b])
