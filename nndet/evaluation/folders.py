"""Evaluating a prediction folder against a labels folder in the raw layout.

Ground truth: ``CASE.nii.gz`` (instance map, any format SimpleITK reads) and ``CASE.json``
(``{"instances": {"1": 0}}``, instance id -> class id) per case. Predictions:
``CASE_boxes.json`` per case (:mod:`nndet.data.predictions`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nndet.data.dataset import read_instances, split_name
from nndet.data.instances import instance_boxes
from nndet.data.io import load_json, read_image, save_json
from nndet.data.predictions import BOXES_SUFFIX, case_id_of, read_case_prediction
from nndet.evaluation.metrics import evaluate

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
Progress = Callable[[Iterable, int], Iterable]  # (items, count) -> the same items


def find_dataset_json(labels_dir: Path | str, levels: int = 3) -> Path | None:
    """The ``dataset.json`` beside a labels folder or in one of the ``levels`` folders above.

    ``TaskNNN/raw_splitted/labelsTs`` finds ``TaskNNN/dataset.json``, two levels up.
    """
    folder = Path(labels_dir).resolve()
    for parent in list(folder.parents)[:levels]:
        if (parent / "dataset.json").is_file():
            return parent / "dataset.json"
    return None


def class_names_from_dataset_json(path: Path | str) -> dict[int, str]:
    """``{class id: name}`` from the ``labels`` of a ``dataset.json``."""
    data = load_json(path)
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise ValueError(
            f'{path} has no \'labels\' ({{"0": "name", ...}}): fix it, or pass another '
            "file with --dataset-json"
        )
    return {int(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))}


def list_label_cases(labels_dir: Path | str) -> dict[str, Path]:
    """``{case id: instance map}`` of a labels folder; each map needs its ``CASE.json``."""
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise FileNotFoundError(
            f"labels folder {labels_dir} does not exist: point it at a folder of instance "
            "maps and case files (CASE.nii.gz + CASE.json), e.g. raw_splitted/labelsTs"
        )
    maps = {
        split_name(p.name): p
        for p in sorted(labels_dir.iterdir())
        if p.is_file() and p.suffix != ".json" and not p.name.startswith(".")
    }
    jsons = {p.stem for p in labels_dir.glob("*.json") if not p.name.startswith(".")}
    if not maps:
        raise ValueError(f"no instance maps in {labels_dir}: expected CASE.nii.gz + CASE.json")
    without_json = sorted(set(maps) - jsons)
    if without_json:
        raise ValueError(
            f"{len(without_json)} instance maps in {labels_dir} have no case json, e.g. "
            f'{labels_dir / (without_json[0] + ".json")}: write {{"instances": {{id: class}}}}'
            ' for each (an empty map gets {"instances": {}})'
        )
    return maps


def read_ground_truth_case(instance_map: Path) -> tuple[np.ndarray, np.ndarray]:
    """Boxes float [G, 2*D] and class labels int64 [G] of one labelled case."""
    array, _ = read_image(instance_map)
    case_json = instance_map.parent / f"{split_name(instance_map.name)}.json"
    classes = read_instances(case_json)
    boxes = instance_boxes(array)
    unlisted = sorted(set(boxes) - set(classes))
    if unlisted:
        raise ValueError(
            f"instances {unlisted} of {instance_map} are missing from {case_json}: give each "
            "instance id of the map its class"
        )
    ids = sorted(boxes)
    return (
        np.array([boxes[i] for i in ids], dtype=np.float64).reshape(-1, 2 * array.ndim),
        np.array([classes[i] for i in ids], dtype=np.int64),
    )


def list_prediction_cases(pred_dir: Path | str) -> dict[str, Path]:
    """``{case id: CASE_boxes.json}`` of a prediction folder."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(
            f"prediction folder {pred_dir} does not exist: run nndet_predict first, or point "
            "--pred at a folder of CASE_boxes.json files"
        )
    return {case_id_of(p): p for p in sorted(pred_dir.glob(f"*{BOXES_SUFFIX}"))}


def _check_missing(missing: Sequence[str], pred_dir: Path, missing_as_empty: bool) -> None:
    if not missing:
        return
    shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
    if not missing_as_empty:
        raise ValueError(
            f"{len(missing)} cases of the ground truth have no CASE_boxes.json in {pred_dir}: "
            f"{shown}. Predict them, or pass --missing-as-empty (missing_as_empty=True) to "
            "count them as cases without detections"
        )
    logger.warning("%d cases without predictions count as empty: %s", len(missing), shown)


def _prediction_entry(path: Path, gt_dim: int | None) -> tuple[Any, Any, Any]:
    record = read_case_prediction(path)
    if gt_dim is not None and int(record["dim"]) != gt_dim:
        raise ValueError(
            f"{path} holds {record['dim']}D boxes but its ground truth is {gt_dim}D: "
            "check that --pred and --gt belong to the same task"
        )
    return record["boxes"], record["scores"], record["labels"]


def evaluate_folders(
    pred_dir: Path | str,
    gt_dir: Path | str,
    output: Path | str | None = None,
    dataset_json: Path | str | None = None,
    iou_thresholds_extra: Sequence[float] = (),
    missing_as_empty: bool = False,
    progress: Progress | None = None,
    case_ids: Sequence[str] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a prediction folder against a labels folder and write the metrics JSON.

    Args:
        pred_dir: folder of ``CASE_boxes.json``.
        gt_dir: labels folder in the raw layout; every case in it is evaluated.
        output: the JSON to write (default ``pred_dir/metrics.json``).
        dataset_json: where the class names come from (default: a ``dataset.json`` found
            beside or above ``gt_dir``; without one, classes are named by id).
        iou_thresholds_extra: further IoU thresholds reported as ``AP@T`` and ``mAP@T``.
        missing_as_empty: count ground-truth cases without a prediction file as cases
            without detections instead of raising.
        progress: wraps the loop that reads the instance maps (the slow part), e.g. tqdm.
        case_ids: evaluate only these cases of ``gt_dir`` (e.g. a fold's validation cases).

    Returns:
        The metrics of :func:`nndet.evaluation.metrics.evaluate` and the path written.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    predicted = list_prediction_cases(pred_dir)
    labelled = list_label_cases(gt_dir)
    if case_ids is not None:
        unknown = sorted(set(case_ids) - set(labelled))
        if unknown:
            raise FileNotFoundError(
                f"{len(unknown)} cases to evaluate have no labels in {gt_dir}, e.g. {unknown[0]}"
            )
        labelled = {case_id: labelled[case_id] for case_id in sorted(set(case_ids))}
        predicted = {c: p for c, p in predicted.items() if c in labelled}
    _check_missing(sorted(set(labelled) - set(predicted)), pred_dir, missing_as_empty)
    extra = sorted(set(predicted) - set(labelled))
    if extra:
        logger.warning("ignoring %d predicted cases that %s does not label", len(extra), gt_dir)

    dataset_json = dataset_json or find_dataset_json(gt_dir)
    class_names = class_names_from_dataset_json(dataset_json) if dataset_json else None
    logger.info("class names from %s", dataset_json or "the ids (no dataset.json found)")

    # each instance map is read once; reading them is most of the time
    items = list(labelled.items())
    ground_truth, predictions = {}, {}
    for case_id, instance_map in progress(items, len(items)) if progress else items:
        ground_truth[case_id] = read_ground_truth_case(instance_map)
        if case_id in predicted:
            gt_dim = ground_truth[case_id][0].shape[1] // 2
            predictions[case_id] = _prediction_entry(predicted[case_id], gt_dim)

    metrics = evaluate(predictions, ground_truth, class_names, iou_thresholds_extra)
    output = Path(output) if output is not None else pred_dir / METRICS_NAME
    save_json(metrics, output)
    return metrics, output
