"""The sweep on constructed validation views whose best inference settings are known."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_fakes import identity_properties

from nndet.cli.sweep import main as sweep_main
from nndet.data.io import save_json, write_image
from nndet.inference.consolidate import InferenceSettings
from nndet.inference.sweep import (
    PLAN_NAME,
    load_inference_settings,
    operating_point,
    sweep,
)
from nndet.inference.views import CaseViews, save_views

SHAPE = [64, 64]
TASK = "Task901_Sweep"
DEFAULTS = InferenceSettings()

# A view box: (view, box [lo0, lo1, hi0, hi1], score, label)
ViewBox = tuple[int, list[float], float, int]


def make_views(
    case_id: str, boxes: list[ViewBox], num_models: int, mirrors: list[list[int]], props=None
) -> CaseViews:
    """Views of one case on a single tile covering the image; view v = (model, mirror)."""
    table = [(m, r) for m in range(num_models) for r in range(len(mirrors))]
    return CaseViews(
        case_id=case_id,
        boxes=torch.tensor([b for _, b, _, _ in boxes], dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor([s for _, _, s, _ in boxes], dtype=torch.float32),
        labels=torch.tensor([c for _, _, _, c in boxes], dtype=torch.long),
        view_ids=torch.tensor([v for v, _, _, _ in boxes], dtype=torch.long),
        view_model=torch.tensor([m for m, _ in table], dtype=torch.long),
        view_mirror=torch.tensor([r for _, r in table], dtype=torch.long),
        view_tile=torch.zeros(len(table), dtype=torch.long),
        mirror_axes=mirrors,
        tile_starts=torch.zeros(1, 2, dtype=torch.long),
        tile_size=torch.tensor(SHAPE),
        image_shape=torch.tensor(SHAPE),
        net_dim=2,
        num_models=num_models,
        properties=props or identity_properties(SHAPE),
    )


def write_task(root: Path, cases: dict, views: list[CaseViews], fold: int = 0) -> Path:
    """A labels folder and a trained model folder; returns the model folder.

    ``cases``: ``{case_id: [(box, class), ...]}``, boxes painted as instances of the map.
    """
    labels = root / "data" / TASK / "raw_splitted" / "labelsTr"
    labels.mkdir(parents=True, exist_ok=True)
    for case_id, objects in cases.items():
        instance_map = np.zeros(SHAPE, dtype=np.uint8)
        for i, (box, _) in enumerate(objects, start=1):
            instance_map[box[0] : box[2], box[1] : box[3]] = i
        write_image(instance_map, labels / f"{case_id}.nii.gz")
        instances = {str(i): c for i, (_, c) in enumerate(objects, start=1)}
        save_json({"instances": instances}, labels / f"{case_id}.json")

    model_dir = root / "models" / TASK / "retina_unet_2d"
    for case_views in views:
        (model_dir / f"fold{fold}" / "val_views").mkdir(parents=True, exist_ok=True)
        save_views(case_views, model_dir / f"fold{fold}" / "val_views")
    save_json({"model": "retina_unet", "plan": {"name": "2d"}}, model_dir / "plan.json")
    save_json({"labels": {"0": "circle", "1": "donut"}}, model_dir / "dataset.json")
    return model_dir


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("NNDET_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("NNDET_MODELS", str(tmp_path / "models"))
    return tmp_path


def small_and_spurious(root: Path) -> Path:
    """One view per case: objects of side 3 and 8, and spurious boxes of side 1.5.

    The spurious boxes outscore the small objects, so minimum size 2 removes only them;
    1 keeps them and 4 also removes the small objects.
    """
    cases, views = {}, []
    for k in range(3):
        big, small = [10, 10 + k, 18, 18 + k], [40, 40, 43, 43]
        cases[f"case{k}"] = [(big, 0), (small, 1)]
        spurious = [20.0 + k, 50.0, 21.5 + k, 51.5]
        boxes = [(0, big, 0.9, 0), (0, small, 0.5, 1), (0, spurious, 0.8, 1)]
        views.append(make_views(f"case{k}", boxes, num_models=1, mirrors=[[]]))
    return write_task(root, cases, views)


def duplicates_and_neighbours(root: Path) -> Path:
    """Two models: every object seen by both, their boxes overlapping with IoU 3/13 (0.23).

    WBC at IoU 0.3 or more leaves both as a duplicate that outranks weaker objects;
    at 0.1 it also merges two neighbouring objects whose boxes overlap with IoU 1/7.
    0.2 alone finds every object once.
    """
    cases, views = {}, []
    for k, score in enumerate([0.9, 0.3]):
        obj = [10, 10, 18, 18]
        shifted = [10.0, 15.0, 18.0, 23.0]
        left, right = [40, 30, 48, 37], [40, 37, 48, 44]
        cases[f"case{k}"] = [(obj, 0), (left, 0), (right, 0)]
        boxes = [
            (0, obj, score, 0), (1, shifted, score - 0.05, 0),
            (0, [40, 30, 48, 38], 0.6, 0), (0, [40, 36, 48, 44], 0.6, 0),
        ]  # fmt: skip
        views.append(make_views(f"case{k}", boxes, num_models=2, mirrors=[[]]))
    return write_task(root, cases, views)


def noisy_mirrors(root: Path) -> Path:
    """One model, identity and flipped view: the flipped one adds confident false boxes."""
    cases, views = {}, []
    for k, score in enumerate([0.9, 0.3]):
        obj = [10, 10 + 4 * k, 18, 18 + 4 * k]
        cases[f"case{k}"] = [(obj, 1)]
        noise = [40.0, 40.0, 46.0, 46.0]
        boxes = [(0, obj, score, 1), (1, obj, score, 1), (1, noise, 0.95, 1)]
        views.append(make_views(f"case{k}", boxes, num_models=1, mirrors=[[], [1]]))
    return write_task(root, cases, views)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (small_and_spurious, {"min_box_size": 2.0}),
        (duplicates_and_neighbours, {"ensemble_iou": 0.2}),
        (noisy_mirrors, {"use_mirror": False}),
    ],
)
def test_sweep_chooses_the_known_best_settings(roots, build, expected):
    model_dir = build(roots)
    record = sweep(model_dir)

    chosen = InferenceSettings.from_dict(record["settings"])
    assert replace(chosen, score_threshold=None) == replace(DEFAULTS, **expected)
    assert record["metric_tuned"] == pytest.approx(1.0)
    assert record["metric_default"] < 1.0
    assert record["metric_default"] == record["search"][0]["metric"]
    assert max(s["metric"] for s in record["search"]) == record["metric_tuned"]


def test_every_distinct_setting_is_recorded_once(roots):
    record = sweep(small_and_spurious(roots))
    tried = [json.dumps(s["settings"], sort_keys=True) for s in record["search"]]
    assert len(tried) == len(set(tried))
    # no mirrors in the views: mirroring is not searched; 1 + 3 + 4 + 3 distinct settings
    assert all(s["parameter"] != "use_mirror" for s in record["search"])
    assert len(tried) == 11


def test_worker_processes_give_the_same_sweep(roots):
    model_dir = duplicates_and_neighbours(roots)
    serial, parallel = sweep(model_dir), sweep(model_dir, processes=2)
    assert parallel == serial


def test_boxes_are_scored_in_original_image_coordinates(roots):
    # Stored = raw cropped to rows [20, 52), axes swapped, halved: a box left in stored
    # voxels would miss its object entirely.
    props = identity_properties([64, 64])
    props.update(
        transpose=[1, 0], crop_bbox=[[20, 52], [0, 64]],
        shape_after_crop=[64, 32], shape_after_resample=[32, 16],
    )  # fmt: skip
    truth = [30, 40, 38, 56]  # raw rows 30-38, columns 40-56
    stored = [20.0, 5.0, 28.0, 9.0]  # columns / 2, (rows - 20) / 2
    views = make_views("case0", [(0, stored, 0.7, 0)], 1, [[]], props=props)
    record = sweep(write_task(roots, {"case0": [(truth, 0)]}, [views]))
    assert record["metric_default"] == pytest.approx(1.0)
    assert record["score_threshold"] == pytest.approx(0.7)


def test_operating_point_maximises_f1_on_a_hand_checked_example():
    # Case a: 0.9 hit, 0.8 miss, 0.7 hit (class 1). Case b: 0.65 right place, wrong class;
    # 0.6 hit; 0.3 miss; 0.2 a second box on 0.6's object. Four objects, one never found.
    # In score order T F T F T F F, F1 = 2 TP / (TP + FP + 4) is
    # 2/5, 2/6, 4/7, 4/8, 6/9, 6/10, 6/11: best at 0.6 with 3 TP and 2 FP.
    hit = [[0, 0, 4, 4], [10, 10, 14, 14], [20, 20, 24, 24], [30, 30, 34, 34]]
    miss = [50.0, 50.0, 54.0, 54.0]
    truth = {
        "a": (torch.tensor(hit[:2], dtype=torch.float64), torch.tensor([0, 1])),
        "b": (torch.tensor(hit[2:], dtype=torch.float64), torch.tensor([0, 0])),
    }
    predictions = {
        "a": (torch.tensor([hit[0], miss, hit[1]]), torch.tensor([0.9, 0.8, 0.7]),
              torch.tensor([0, 0, 1])),
        "b": (torch.tensor([hit[2], miss, hit[2], hit[3]]), torch.tensor([0.6, 0.3, 0.2, 0.65]),
              torch.tensor([0, 1, 0, 1])),
    }  # fmt: skip
    point = operating_point(predictions, truth)
    assert point["score_threshold"] == pytest.approx(0.6)
    assert point["precision"] == pytest.approx(3 / 5)
    assert point["recall"] == pytest.approx(3 / 4)
    assert point["f1"] == pytest.approx(6 / 9)
    assert point["fp_per_case"] == pytest.approx(2 / 2)


def test_operating_point_keeps_tied_scores_together():
    truth = {"a": (torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([0]))}
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [20.0, 20.0, 24.0, 24.0]])
    # the FP ties with the TP: threshold 0.5 keeps both, F1 = 2/3; no threshold keeps one
    point = operating_point({"a": (boxes, torch.tensor([0.5, 0.5]), torch.tensor([0, 0]))}, truth)
    assert point["score_threshold"] == pytest.approx(0.5)
    assert point["f1"] == pytest.approx(2 / 3)


def test_no_trained_fold_names_the_training_command(roots, capsys):
    model_dir = roots / "models" / TASK / "retina_unet_2d"
    model_dir.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="nndet_train Task901 -f 0"):
        sweep(model_dir)
    with pytest.raises(SystemExit) as exit_info:
        sweep_main(["901"])
    assert exit_info.value.code == 1
    assert "nndet_train Task901 -f 0" in capsys.readouterr().err


def test_untrained_fold_asked_for_is_an_error(roots):
    with pytest.raises(FileNotFoundError, match="-f 3"):
        sweep(small_and_spurious(roots), folds=[3])


def test_inference_plan_round_trips_through_load_inference_settings(roots):
    model_dir = small_and_spurious(roots)
    record = sweep(model_dir, metric="mAP@0.1:0.5")
    settings, threshold = load_inference_settings(model_dir)
    assert settings.to_dict() == record["settings"]
    assert threshold == record["score_threshold"] == settings.score_threshold
    assert json.loads((model_dir / PLAN_NAME).read_text())["metric"] == "mAP@0.1:0.5"


def test_missing_inference_plan_gives_defaults_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        settings, threshold = load_inference_settings(tmp_path)
    assert (settings, threshold) == (DEFAULTS, None)
    assert "nndet_sweep" in caplog.text


def test_unknown_metric_is_rejected_before_any_work(roots):
    with pytest.raises(ValueError, match="mAP@0.1:0.5"):
        sweep(small_and_spurious(roots), metric="accuracy")


def test_command_finds_the_only_model_and_prints_the_comparison(roots, capsys):
    model_dir = small_and_spurious(roots)
    with pytest.raises(SystemExit) as exit_info:
        sweep_main(["Task901", "--folds", "0"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert str(model_dir / PLAN_NAME) in out
    assert "min_box_size" in out and "operating point" in out
    assert (model_dir / PLAN_NAME).is_file()
