"""nndet_eval end to end on a tiny 3D task written by the test, and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nndet.cli.eval import main
from nndet.data.io import save_json, write_image
from nndet.data.predictions import write_case_prediction
from nndet.evaluation.folders import evaluate_folders, find_dataset_json

GEOMETRY = {"spacing": [2.0, 1.0, 1.0], "origin": [0.0, 0.0, 0.0], "direction": np.eye(3).ravel()}
SHAPE = (8, 24, 24)


def _write_label(labels_dir: Path, case_id: str, objects: list[tuple[list[int], int]]) -> None:
    """Instance map with one cuboid per object (``[lo0, lo1, lo2, hi0, hi1, hi2]``, class)."""
    instance_map = np.zeros(SHAPE, dtype=np.int16)
    for instance_id, (box, _) in enumerate(objects, start=1):
        instance_map[box[0] : box[3], box[1] : box[4], box[2] : box[5]] = instance_id
    write_image(instance_map, labels_dir / f"{case_id}.nii.gz", GEOMETRY)
    instances = {str(i): label for i, (_, label) in enumerate(objects, start=1)}
    save_json({"instances": instances}, labels_dir / f"{case_id}.json")


def _write_pred(pred_dir: Path, case_id: str, dets: list[tuple[list[float], float, int]]) -> None:
    boxes = np.array([d[0] for d in dets], dtype=float).reshape(-1, 6)
    scores, labels = [d[1] for d in dets], [d[2] for d in dets]
    names = {0: "benign", 1: "malignant"}
    write_case_prediction(pred_dir, case_id, boxes, scores, labels, names, GEOMETRY, SHAPE)


@pytest.fixture()
def task(tmp_path: Path) -> tuple[Path, Path]:
    """A task with three labelled cases (one without objects) and predictions for all."""
    task_dir = tmp_path / "Task900_Tiny"
    labels = task_dir / "raw_splitted" / "labelsTs"
    save_json({"labels": {"0": "benign", "1": "malignant"}}, task_dir / "dataset.json")
    a0, a1, b0 = [1, 2, 2, 4, 8, 8], [4, 12, 12, 7, 20, 22], [0, 0, 0, 3, 5, 5]
    _write_label(labels, "case_a", [(a0, 0), (a1, 1)])
    _write_label(labels, "case_b", [(b0, 0)])
    _write_label(labels, "case_c", [])

    pred = tmp_path / "pred"
    # benign: a0 hit (.9), FP in c (.8), b0 missed -> AP (51 points at precision 1) / 101
    # malignant: a1 hit (.7) -> AP 1
    _write_pred(pred, "case_a", [(a0, 0.9, 0), (a1, 0.7, 1)])
    _write_pred(pred, "case_b", [])
    _write_pred(pred, "case_c", [([0, 10, 10, 2, 14, 14], 0.8, 0)])
    return pred, labels


def test_cli_writes_metrics_json_into_the_prediction_folder(task, capsys):
    pred, labels = task

    code = main(["--pred", str(pred), "--gt", str(labels)])

    assert code == 0
    metrics = json.loads((pred / "metrics.json").read_text())
    assert metrics["num_cases"] == 3
    assert metrics["AP@0.1"]["benign"] == pytest.approx(51 / 101)
    assert metrics["AP@0.1"]["malignant"] == 1.0
    assert metrics["mAP@0.1"] == pytest.approx((51 / 101 + 1) / 2)
    # pooled: 3 objects; .9 hit, .8 FP (1/3 FP per case), .7 hit -> 2/3 from 0.5 FP/case on
    assert metrics["FROC@0.1"]["sensitivity"] == pytest.approx([1 / 3] * 2 + [2 / 3] * 5)
    out = capsys.readouterr().out
    assert "benign" in out and "malignant" in out and "CPM" in out
    assert str(pred / "metrics.json") in out


def test_cli_output_file_and_extra_iou(task, tmp_path):
    pred, labels = task
    output = tmp_path / "elsewhere" / "m.json"

    code = main(["--pred", str(pred), "--gt", str(labels), "-o", str(output), "--iou", "0.5"])

    assert code == 0 and not (pred / "metrics.json").exists()
    metrics = json.loads(output.read_text())
    assert metrics["AP@0.5"]["malignant"] == 1.0 and "mAP@0.5" in metrics


def test_dataset_json_is_found_above_the_labels_folder_or_named(task, tmp_path):
    pred, labels = task
    assert find_dataset_json(labels) == labels.parent.parent / "dataset.json"
    other = tmp_path / "other.json"
    save_json({"labels": {"0": "small", "1": "large"}}, other)

    metrics, _ = evaluate_folders(pred, labels, dataset_json=other)

    assert list(metrics["AP@0.1"]) == ["small", "large"]


def test_without_dataset_json_classes_are_named_by_id(task, tmp_path):
    pred, labels = task
    bare = tmp_path / "bare_labels"
    bare.mkdir()
    for path in labels.iterdir():
        (bare / path.name).write_bytes(path.read_bytes())

    metrics, _ = evaluate_folders(pred, bare)

    assert metrics["AP@0.1"] == {"0": pytest.approx(51 / 101), "1": 1.0}


def test_missing_predictions_are_an_error_listing_them(task, capsys):
    pred, labels = task
    (pred / "case_b_boxes.json").unlink()
    (pred / "case_c_boxes.json").unlink()

    code = main(["--pred", str(pred), "--gt", str(labels)])

    err = capsys.readouterr().err
    assert code == 1
    assert "2 cases" in err and "case_b, case_c" in err and "--missing-as-empty" in err
    assert not (pred / "metrics.json").exists()


def test_missing_as_empty_counts_them_as_cases_without_detections(task):
    pred, labels = task
    (pred / "case_c_boxes.json").unlink()  # its only detection was a false positive

    code = main(["--pred", str(pred), "--gt", str(labels), "--missing-as-empty"])

    metrics = json.loads((pred / "metrics.json").read_text())
    assert code == 0 and metrics["num_cases"] == 3
    # benign: a0 hit, b0 missed, no FP: precision 1 up to recall 1/2
    assert metrics["AP@0.1"]["benign"] == pytest.approx(51 / 101)
    assert metrics["FROC@0.1"]["sensitivity"] == pytest.approx([2 / 3] * 7)


def test_bad_prediction_json_names_the_file(task, capsys):
    pred, labels = task
    (pred / "case_a_boxes.json").write_text("{not json")

    code = main(["--pred", str(pred), "--gt", str(labels)])

    assert code == 1
    assert "case_a_boxes.json is not valid JSON" in capsys.readouterr().err


def test_missing_folder_is_a_clear_error(task, capsys):
    pred, labels = task

    code = main(["--pred", str(pred.parent / "nope"), "--gt", str(labels)])

    err = capsys.readouterr().err
    assert code == 1 and "nope does not exist" in err and "nndet_predict" in err


def test_instance_map_without_case_json_is_an_error(task, capsys):
    pred, labels = task
    (labels / "case_b.json").unlink()

    code = main(["--pred", str(pred), "--gt", str(labels)])

    assert code == 1 and "case_b.json" in capsys.readouterr().err


def test_instance_missing_from_case_json_is_an_error(task):
    pred, labels = task
    save_json({"instances": {"1": 0}}, labels / "case_a.json")

    with pytest.raises(ValueError, match=r"instances \[2\] of .*case_a.nii.gz"):
        evaluate_folders(pred, labels)


def test_help_and_bad_iou(capsys):
    with pytest.raises(SystemExit) as help_exit:
        main(["--help"])
    assert help_exit.value.code == 0
    assert "--missing-as-empty" in capsys.readouterr().out

    with pytest.raises(SystemExit) as bad_exit:
        main(["--pred", "p", "--gt", "g", "--iou", "1.5"])
    assert bad_exit.value.code != 0
    assert "IoU threshold must be in (0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("dim", [2, 3])
def test_nndet_eval_on_a_written_folder_equals_pycocotools(tmp_path, dim, coco_oracle):
    # non-overlapping objects on a grid of cells, jittered detections, duplicates and FPs
    rng = np.random.default_rng(dim)
    shape, cell = ((12, 12, 12), 4) if dim == 3 else ((96, 96), 12)
    grid = [s // cell for s in shape]
    geometry = {"spacing": [1.0] * dim, "origin": [0.0] * dim, "direction": np.eye(dim).ravel()}
    labels_dir, pred_dir = tmp_path / "labels", tmp_path / "pred"
    ground_truth, predictions = {}, {}
    for case in range(6):
        instance_map = np.zeros(shape, dtype=np.int16)
        cells = [np.unravel_index(i, grid) for i in range(int(np.prod(grid)))]
        chosen = rng.choice(len(cells), size=int(rng.integers(0, 5)), replace=False)
        gt_boxes, gt_labels, det = [], [], []
        for instance_id, c in enumerate(chosen, start=1):
            lo = np.array(cells[c]) * cell + rng.integers(0, 2, dim)
            hi = lo + rng.integers(2, cell - 1, dim)
            instance_map[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = instance_id
            gt_boxes.append([*lo, *hi])
            gt_labels.append(int(rng.integers(0, 2)))
            for _ in range(int(rng.integers(0, 3))):
                shift = rng.normal(0, 0.8, dim)
                det.append(([*(lo + shift), *(hi + shift)], rng.random(), gt_labels[-1]))
        for _ in range(int(rng.integers(0, 3))):
            lo = rng.uniform(0, shape[0] - 4, dim)
            det.append(([*lo, *(lo + 3)], rng.random(), int(rng.integers(0, 2))))
        write_image(instance_map, labels_dir / f"c{case}.nii.gz", geometry)
        save_json(
            {"instances": {str(i + 1): k for i, k in enumerate(gt_labels)}},
            labels_dir / f"c{case}.json",
        )
        boxes = np.array([d[0] for d in det], dtype=float).reshape(-1, 2 * dim)
        scores, labels = [d[1] for d in det], [d[2] for d in det]
        write_case_prediction(pred_dir, f"c{case}", boxes, scores, labels, None, geometry, shape)
        ground_truth[f"c{case}"] = (np.array(gt_boxes, float).reshape(-1, 2 * dim), gt_labels)
        predictions[f"c{case}"] = (boxes, scores, labels)

    code = main(["--pred", str(pred_dir), "--gt", str(labels_dir), "--iou", "0.5"])

    metrics = json.loads((pred_dir / "metrics.json").read_text())
    expected = coco_oracle(predictions, ground_truth, [0, 1], [0.1, 0.5])
    assert code == 0
    for row, key in enumerate(["AP@0.1", "AP@0.5"]):
        assert [metrics[key][c] for c in ("0", "1")] == pytest.approx(expected[row], abs=1e-3)
