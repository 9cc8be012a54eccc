"""Fingerprint values on a tiny raw task written here (3D, one CT modality, one empty case)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nndet.data.dataset import list_cases
from nndet.data.io import write_image
from nndet.planning.fingerprint import (
    compute_fingerprint,
    fingerprint_case,
    load_fingerprint,
    save_fingerprint,
)

SPACING = [3.0, 0.5, 0.5]


def _write_case(task: Path, case_id: str, image: np.ndarray, labels: np.ndarray, classes: dict):
    geometry = {"spacing": SPACING, "origin": [0.0] * 3, "direction": list(np.eye(3).ravel())}
    write_image(image, task / "raw_splitted/imagesTr" / f"{case_id}_0000.nii.gz", geometry)
    write_image(labels, task / "raw_splitted/labelsTr" / f"{case_id}.nii.gz", geometry)
    instances = {str(k): v for k, v in classes.items()}
    (task / "raw_splitted/labelsTr" / f"{case_id}.json").write_text(
        json.dumps({"instances": instances})
    )


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """case0: two objects (classes 0 and 1) inside a nonzero body with a zero border;
    case1: one class-0 object, no border; case2: no objects."""
    task = tmp_path_factory.mktemp("Task900_Tiny")
    (task / "dataset.json").write_text(
        json.dumps(
            {
                "task": "Task900_Tiny",
                "name": "Tiny",
                "dim": 3,
                "modalities": {"0": "CT"},
                "labels": {"0": "small", "1": "large"},
                "test_labels": False,
            }
        )
    )
    image = np.zeros((8, 20, 24), np.float32)
    image[1:7, 2:18, 3:21] = 10.0  # the nonzero body: cropping keeps [1:7, 2:18, 3:21]
    labels = np.zeros(image.shape, np.int16)
    labels[2:4, 5:8, 6:10] = 1
    image[2:4, 5:8, 6:10] = 100.0
    labels[3:6, 10:16, 8:12] = 2
    image[3:6, 10:16, 8:12] = np.linspace(200, 300, 3 * 6 * 4).reshape(3, 6, 4)
    _write_case(task, "case0", image, labels, {1: 0, 2: 1})

    image1 = np.full((6, 16, 16), 5.0, np.float32)
    labels1 = np.zeros(image1.shape, np.int16)
    labels1[1:2, 4:6, 4:7] = 1
    image1[1:2, 4:6, 4:7] = 50.0
    _write_case(task, "case1", image1, labels1, {1: 0})

    image2 = np.full((6, 16, 16), 7.0, np.float32)
    _write_case(task, "case2", image2, np.zeros(image2.shape, np.int16), {})
    return task


def test_case_fingerprint_has_spacing_shapes_and_objects(task):
    case = list_cases(task)[0]
    info = fingerprint_case(case)

    assert info["spacing"] == pytest.approx(SPACING)
    assert info["shape"] == [8, 20, 24]
    assert info["shape_after_crop"] == [6, 16, 18]
    objects = {o["id"]: o for o in info["objects"]}
    assert objects[1]["class"] == 0 and objects[2]["class"] == 1
    assert objects[1]["box"] == [2, 5, 6, 4, 8, 10]
    assert objects[1]["size_voxels"] == [2, 3, 4]
    assert objects[1]["size_mm"] == pytest.approx([6.0, 1.5, 2.0])
    assert objects[2]["size_voxels"] == [3, 6, 4]


def test_case_intensity_statistics_are_those_of_the_object_voxels(task):
    info = fingerprint_case(list_cases(task)[0])
    object_values = np.concatenate([np.full(2 * 3 * 4, 100.0), np.linspace(200, 300, 3 * 6 * 4)])
    stats = info["intensity_stats"][0]
    assert stats["mean"] == pytest.approx(object_values.mean(), rel=1e-5)
    assert stats["min"] == pytest.approx(100.0)
    assert stats["max"] == pytest.approx(300.0)
    assert stats["percentile_99_5"] == pytest.approx(np.percentile(object_values, 99.5), rel=1e-5)


def test_empty_case_has_no_objects_and_null_intensity_stats(task):
    info = fingerprint_case(list_cases(task)[2])
    assert info["objects"] == []
    assert info["intensity_stats"][0]["mean"] is None


def test_dataset_fingerprint_pools_classes_and_cases(task, tmp_path):
    fingerprint = compute_fingerprint(task, num_processes=1, num_samples=2000)

    assert fingerprint["num_cases"] == 3
    assert fingerprint["num_objects"] == 3
    assert fingerprint["cases_without_objects"] == ["case2"]
    assert fingerprint["objects_per_case"] == {"mean": 1.0, "median": 1.0, "min": 0, "max": 2}
    small, large = fingerprint["classes"]["0"], fingerprint["classes"]["1"]
    assert (small["num_objects"], small["num_cases"]) == (2, 2)
    assert (large["num_objects"], large["num_cases"]) == (1, 1)
    # class 0 sizes: [2, 3, 4] and [1, 2, 3] voxels
    assert small["size_voxels_percentiles"]["p0"] == [1, 2, 3]
    assert small["size_voxels_percentiles"]["p100"] == [2, 3, 4]
    assert large["size_mm_percentiles"]["p50"] == pytest.approx([9.0, 3.0, 2.0])
    assert fingerprint["median_spacing"] == pytest.approx(SPACING)
    intensity = fingerprint["intensity"][0]
    assert 50.0 <= intensity["percentile_00_5"] < intensity["mean"] < intensity["percentile_99_5"]
    assert intensity["percentile_99_5"] <= 300.0

    path = tmp_path / "preprocessed" / "fingerprint.json"
    save_fingerprint(fingerprint, path)
    assert load_fingerprint(path) == json.loads(json.dumps(fingerprint))


def test_worker_pool_gives_the_same_fingerprint(task):
    serial = compute_fingerprint(task, num_processes=1, num_samples=500)
    parallel = compute_fingerprint(task, num_processes=2, num_samples=500)
    assert parallel == serial


def test_2d_case_fingerprint(tmp_path):
    task = tmp_path / "Task901_Flat"
    (task / "raw_splitted/imagesTr").mkdir(parents=True)
    (task / "raw_splitted/labelsTr").mkdir(parents=True)
    geometry = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0]}
    image = np.ones((32, 40), np.float32)
    labels = np.zeros((32, 40), np.int16)
    labels[4:24, 10:30] = 1
    write_image(image, task / "raw_splitted/imagesTr/img_0000.nii.gz", geometry)
    write_image(labels, task / "raw_splitted/labelsTr/img.nii.gz", geometry)
    (task / "raw_splitted/labelsTr/img.json").write_text('{"instances": {"1": 0}}')

    info = fingerprint_case(list_cases(task)[0])
    assert info["shape"] == [32, 40] and info["shape_after_crop"] == [32, 40]
    assert info["objects"][0]["size_voxels"] == [20, 20]


def test_missing_fingerprint_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="nndet_prep"):
        load_fingerprint(tmp_path / "fingerprint.json")
