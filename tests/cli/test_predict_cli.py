"""nndet_predict and the task forms of nndet_eval on a tiny random-weight model folder."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))  # the shared model factory
from tiny_model_folder import GEOMETRY_2D, make_model_folder, write_images  # noqa: E402

from nndet.cli.eval import main as eval_main  # noqa: E402
from nndet.cli.predict import main as predict_main  # noqa: E402
from nndet.data.io import load_json, save_json, write_image  # noqa: E402
from nndet.data.predictions import read_case_prediction, write_case_prediction  # noqa: E402

ENV = ("NNDET_DATA", "NNDET_MODELS", "det_data", "det_models")


def _run(main, argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


@pytest.fixture()
def roots(tmp_path, monkeypatch):
    """NNDET_DATA and NNDET_MODELS in tmp_path, with a trained-looking Task900."""
    monkeypatch.setenv("NNDET_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("NNDET_MODELS", str(tmp_path / "models"))
    model_dir = make_model_folder(tmp_path / "models" / "Task900_Tiny" / "retina_unet_2d")
    task = tmp_path / "data" / "Task900_Tiny"
    task.mkdir(parents=True)
    shutil.copy(model_dir / "dataset.json", task / "dataset.json")
    return task, model_dir


def _write_labels(labels: Path, case_ids: list[str]) -> None:
    """One square object of class 0 per case, on the images' grid."""
    for case_id in case_ids:
        instance_map = np.zeros((48, 40), dtype=np.int16)
        instance_map[8:16, 6:14] = 1
        write_image(instance_map, labels / f"{case_id}.nii.gz", GEOMETRY_2D)
        save_json({"instances": {"1": 0}}, labels / f"{case_id}.json")


def test_model_dir_copied_elsewhere_predicts_without_env(tmp_path, monkeypatch, capsys):
    original = make_model_folder(tmp_path / "a" / "retina_unet_2d")
    copied = tmp_path / "b" / "my_model"
    shutil.copytree(original, copied)
    shutil.rmtree(tmp_path / "a")
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # the default roots ./nndet_data, ./nndet_models do not exist
    write_images(tmp_path / "in", ["x.nii.gz", "y.nii.gz"])

    argv = ["--model-dir", str(copied), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    assert _run(predict_main, argv + ["--no-mirror", "--device", "cpu"]) == 0
    assert read_case_prediction(tmp_path / "out" / "x_boxes.json")["case_id"] == "x"
    assert (tmp_path / "out" / "predictions.csv").is_file()
    out = capsys.readouterr().out
    assert str(copied) in out and "predicted 2 cases" in out


def test_corrupt_file_is_listed_and_the_exit_code_is_one(roots, tmp_path, capsys):
    write_images(tmp_path / "in", ["a.nii.gz"])
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"\x00" * 100)
    argv = ["Task900", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-mirror"]
    assert _run(predict_main, argv) == 1
    assert (tmp_path / "out" / "a_boxes.json").is_file()
    captured = capsys.readouterr()
    assert "broken" in captured.err and "1 failed" in captured.out


def test_test_form_writes_into_the_model_folder_and_eval_test_scores_it(roots, capsys):
    task, model_dir = roots
    write_images(task / "raw_splitted" / "imagesTs", ["t1_0000.nii.gz", "t2_0000.nii.gz"])
    _write_labels(task / "raw_splitted" / "labelsTs", ["t1", "t2"])

    assert _run(predict_main, ["900", "--test", "--no-mirror", "--png"]) == 0
    predictions = model_dir / "test_predictions"
    assert sorted(p.name for p in predictions.glob("*_boxes.json")) == [
        "t1_boxes.json", "t2_boxes.json"
    ]  # fmt: skip
    assert (predictions / "png" / "t1.png").is_file()

    assert eval_main(["900", "--test"]) == 0
    metrics = load_json(predictions / "metrics.json")
    assert metrics["num_cases"] == 2 and "mAP@0.1" in metrics
    assert "mAP@0.1" in capsys.readouterr().out


def test_eval_fold_scores_only_the_folds_validation_cases(roots):
    task, model_dir = roots
    _write_labels(task / "raw_splitted" / "labelsTr", ["a", "b", "c"])
    splits = [{"train": ["c"], "val": ["a", "b"]}, {"train": ["a", "b"], "val": ["c"]}]
    save_json(splits, task / "preprocessed" / "splits.json")
    val = model_dir / "fold0" / "val_predictions"
    for case_id, score in (("a", 0.9), ("b", 0.4)):
        box = [[8.0, 6.0, 16.0, 14.0]]  # exactly the object
        write_case_prediction(
            val, case_id, box, [score], [0], None, GEOMETRY_2D, image_shape=[48, 40]
        )

    assert eval_main(["900", "--fold", "0"]) == 0
    metrics = load_json(val / "metrics.json")
    assert metrics["num_cases"] == 2
    assert metrics["mAP@0.1"] == pytest.approx(1.0)


def test_eval_task_forms_name_the_missing_step(roots, capsys):
    assert eval_main(["900", "--test"]) == 1
    assert "nndet_predict 900 --test" in capsys.readouterr().err
    assert eval_main(["900", "--fold", "2"]) == 1
    assert "nndet_train 900 -f 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["-i", "in", "-o", "out"],  # neither TASK nor --model-dir
        ["--model-dir", "m", "--test"],  # --test needs TASK
        ["900"],  # no folders
        ["900", "--test", "-o", "out"],
    ],
)
def test_predict_usage_errors_exit_with_two(argv, capsys):
    assert _run(predict_main, argv) == 2


@pytest.mark.parametrize(
    "argv", [["900"], ["900", "--fold", "0", "--test"], ["--pred", "p"], ["--fold", "0"]]
)
def test_eval_usage_errors_exit_with_two(argv, capsys):
    assert _run(eval_main, argv) == 2
