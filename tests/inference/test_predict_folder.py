"""predict_folder on a tiny random-weight model folder: files, formats, failures, reruns.

The model is untrained, so these tests check structure and geometry, not accuracy.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from matplotlib.image import imread
from tiny_model_folder import GEOMETRY_2D, make_model_folder, write_images

from nndet.data.io import read_image, save_json
from nndet.data.predictions import box_centers_world, read_case_prediction
from nndet.inference.consolidate import InferenceSettings
from nndet.inference.models import load_model_dir, resolve_model_dir
from nndet.inference.overlays import rasterise_boxes, write_png_overlays
from nndet.inference.predict_folder import find_input_cases, predict_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("models") / "retina_unet_2d", folds=(0, 1))


def _predict(model_dir, in_dir, out_dir, **kwargs):
    kwargs.setdefault("folds", [0])
    kwargs.setdefault("mirror", False)
    return predict_folder(model_dir, in_dir, out_dir, device="cpu", **kwargs)


def test_cases_group_modality_files_and_list_missing_ones(tmp_path):
    for name in ["a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "notes.txt", "x.nii.gz"]:
        (tmp_path / name).write_bytes(b"")
    cases = find_input_cases(tmp_path, num_modalities=2)
    assert [c for c, _ in cases] == ["a", "b"]
    assert [p.name for p in cases[0][1]] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    assert [p.name for p in cases[1][1]] == ["b_0000.nii.gz", "b_0001.nii.gz"]


def test_single_modality_takes_any_file_name(tmp_path):
    for name in ["scan one.nii.gz", "patient7.nrrd", "c_0000.png", "c.json", ".hidden.nii.gz"]:
        (tmp_path / name).write_bytes(b"")
    ids = [c for c, _ in find_input_cases(tmp_path, num_modalities=1)]
    assert ids == ["c", "patient7", "scan one"]


def test_two_files_of_one_case_are_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "a.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="a.nii.gz and a.png"):
        find_input_cases(tmp_path, num_modalities=1)


def test_corrupt_file_is_reported_and_the_others_are_written(model_dir, tmp_path):
    write_images(tmp_path / "in", ["a_0000.nii.gz", "b.nrrd"])
    (tmp_path / "in" / "bad_0000.nii.gz").write_bytes(b"not an image" * 20)
    report = _predict(model_dir, tmp_path / "in", tmp_path / "out")

    assert sorted(report.predicted) == ["a", "b"]
    assert list(report.failed) == ["bad"] and "bad_0000.nii.gz" in report.failed["bad"]
    assert not (tmp_path / "out" / "bad_boxes.json").exists()
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    records = [read_case_prediction(tmp_path / "out" / f"{c}_boxes.json") for c in "ab"]
    assert len(rows) == sum(len(r["boxes"]) for r in records) > 0
    assert {row["case_id"] for row in rows} == {"a", "b"}


def test_boxes_are_in_the_input_geometry(model_dir, tmp_path):
    write_images(tmp_path / "in", ["a.nii.gz"])
    _predict(model_dir, tmp_path / "in", tmp_path / "out", mirror=True)
    record = read_case_prediction(tmp_path / "out" / "a_boxes.json")
    _, geometry = read_image(tmp_path / "in" / "a.nii.gz")

    assert record["image_shape"] == geometry["shape"] == [48, 40]
    assert record["spacing"] == geometry["spacing"]
    assert record["origin"] == geometry["origin"] == GEOMETRY_2D["origin"]
    assert record["score_threshold"] is None  # no sweep yet
    assert record["classes"][0] in ("circle", "donut")
    boxes = record["boxes"]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= [48, 40]).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert (np.diff(record["scores"]) <= 0).all()
    np.testing.assert_allclose(record["center_world"], box_centers_world(boxes, geometry))


def test_tuned_settings_give_the_operating_point(model_dir, tmp_path):
    tuned = tmp_path / "tuned"
    make_model_folder(tuned)
    settings = InferenceSettings(method="nms", score_threshold=0.5)
    save_json(
        {"settings": settings.to_dict(), "score_threshold": 0.5}, tuned / "inference_plan.json"
    )
    write_images(tmp_path / "in", ["a.nii.gz"])
    report = _predict(tuned, tmp_path / "in", tmp_path / "out")
    assert report.score_threshold == 0.5
    assert read_case_prediction(tmp_path / "out" / "a_boxes.json")["score_threshold"] == 0.5


def test_rerun_skips_written_cases_unless_overwrite(model_dir, tmp_path):
    write_images(tmp_path / "in", ["a.nii.gz", "b.nii.gz"])
    _predict(model_dir, tmp_path / "in", tmp_path / "out")
    marker = tmp_path / "out" / "a_boxes.json"
    marker.write_text(marker.read_text().replace('"case_id": "a"', '"case_id": "a", "seen": 1'))

    again = _predict(model_dir, tmp_path / "in", tmp_path / "out")
    assert again.predicted == [] and again.skipped == ["a", "b"]
    assert '"seen": 1' in marker.read_text()
    assert again.csv is not None and again.csv.is_file()

    forced = _predict(model_dir, tmp_path / "in", tmp_path / "out", overwrite=True)
    assert forced.predicted == ["a", "b"]
    assert '"seen"' not in marker.read_text()


def test_png_and_nifti_show_the_boxes_above_the_threshold(model_dir, tmp_path):
    write_images(tmp_path / "in", ["a.nii.gz"])
    _predict(model_dir, tmp_path / "in", tmp_path / "out", png=True, nifti=True)
    record = read_case_prediction(tmp_path / "out" / "a_boxes.json")
    shown = int((record["scores"] >= 0.5).sum())
    assert 0 < shown < len(record["scores"])  # the fake model scores ~0.7 and ~0.3

    picture = imread(tmp_path / "out" / "png" / "a.png")
    assert picture.ndim == 3 and picture.shape[0] > 100

    instance_map, geometry = read_image(tmp_path / "out" / "nifti" / "a.nii.gz")
    _, image_geometry = read_image(tmp_path / "in" / "a.nii.gz")
    assert geometry == image_geometry
    assert set(np.unique(instance_map)) <= set(range(shown + 1))
    lo0, lo1, hi0, hi1 = record["boxes"][0]
    assert instance_map[int((lo0 + hi0) / 2), int((lo1 + hi1) / 2)] == 1  # the best is on top


def test_rerun_adds_pictures_asked_for_later(model_dir, tmp_path):
    write_images(tmp_path / "in", ["a.nii.gz"])
    _predict(model_dir, tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out" / "png").exists()
    report = _predict(model_dir, tmp_path / "in", tmp_path / "out", png=True)
    assert report.skipped == ["a"]
    assert (tmp_path / "out" / "png" / "a.png").is_file()


def test_rasterised_boxes_cover_voxel_centres_best_on_top():
    boxes = np.array([[0.2, 0.2, 2.7, 1.4], [1.0, 0.0, 4.0, 3.0], [3.4, 3.4, 3.45, 3.45]])
    instance_map = rasterise_boxes(boxes, (4, 4))
    expected = np.array([[1, 0, 0, 0], [1, 2, 2, 0], [1, 2, 2, 0], [2, 2, 2, 3]])
    np.testing.assert_array_equal(instance_map, expected)


def test_3d_pictures_one_per_slice_through_a_box_centre(tmp_path):
    image = np.random.default_rng(0).normal(size=(10, 20, 24)).astype(np.float32)
    boxes = np.array([[2, 2, 2, 5, 8, 8], [6, 10, 10, 9, 16, 20], [0, 0, 0, 10, 20, 24]], float)
    record = {
        "case_id": "vol", "dim": 3, "spacing": [3.0, 1.0, 1.0], "score_threshold": 0.4,
        "boxes": boxes, "scores": np.array([0.9, 0.6, 0.1]), "labels": np.array([0, 1, 0]),
        "classes": ["circle", "donut", "circle"],
    }  # fmt: skip
    paths = write_png_overlays(tmp_path, record, image)
    assert [p.name for p in paths] == ["vol_slice0003.png", "vol_slice0007.png"]
    assert all(imread(p).ndim == 3 for p in paths)


def test_folds_choose_the_ensemble(model_dir):
    plan, dataset_json, models, folds = load_model_dir(model_dir, device="cpu")
    assert folds == [0, 1] and len(models) == 2 and plan.name == "2d"
    assert dataset_json["labels"] == {"0": "circle", "1": "donut"}
    assert load_model_dir(model_dir, folds=[1], device="cpu").folds == [1]
    with pytest.raises(FileNotFoundError, match="fold3/checkpoint_final.pt"):
        load_model_dir(model_dir, folds=[3], device="cpu")


def test_model_folder_is_found_by_task(tmp_path, monkeypatch):
    monkeypatch.setenv("NNDET_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("NNDET_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="nndet_train Task900"):
        resolve_model_dir("900")
    task = tmp_path / "models" / "Task900_Tiny"
    make_model_folder(task / "retina_unet_2d")
    assert resolve_model_dir("Task900") == task / "retina_unet_2d"

    (task / "retina_unet_3d" / "fold0").mkdir(parents=True)
    (task / "retina_unet_3d" / "fold0" / "checkpoint_final.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="--model and --plan"):
        resolve_model_dir("900")
    assert resolve_model_dir(900, plan="3d") == task / "retina_unet_3d"
    with pytest.raises(FileNotFoundError, match="nndet_train"):
        resolve_model_dir(900, model="retina_net")
