"""Detection metrics: COCO-style AP, FROC with CPM, patient-level AP.

The definitions, matching rules and the JSON are those of ``documentation/evaluation.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nndet.evaluation.matching import MAX_DETECTIONS, CaseMatches, match_case

logger = logging.getLogger(__name__)

# mAP@0.1:0.5 averages IoU 0.10, 0.15, ..., 0.50, the range nnDetection reports for
# medical objects (small, fuzzy borders), where COCO's 0.5:0.95 would be too strict.
IOU_THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(9))
MAIN_IOU = 0.1
# The seven rates of the LUNA16 challenge's FROC; CPM is their mean sensitivity.
FP_PER_CASE = (0.125, 0.25, 0.5, 1, 2, 4, 8)
# COCO's 101 recall points, built exactly as pycocotools builds them (i * 0.01): a recall of
# exactly 0.3 then falls short of the point 0.30000000000000004, as it does there.
RECALL_POINTS = torch.from_numpy(np.linspace(0.0, 1.0, 101))

Prediction = tuple[Any, Any, Any]  # boxes float [N, 2*D], scores float [N], labels int [N]
GroundTruth = tuple[Any, Any]  # boxes float [G, 2*D], labels int [G]


def average_precision(scores: Tensor, matched: Tensor, num_gt: int) -> float | None:
    """COCO-style AP of one class: precision interpolated at 101 recall points.

    Args:
        scores: float [N], detections of all cases (ties keep their given order).
        matched: bool [N], whether each detection is a true positive.
        num_gt: number of objects of the class.

    Returns:
        AP in [0, 1], or ``None`` when there are no objects (AP is undefined).
    """
    if num_gt == 0:
        return None
    if len(scores) == 0:
        return 0.0
    order = torch.sort(scores, descending=True, stable=True).indices
    hits = matched[order].double()
    tp, fp = hits.cumsum(0), (1.0 - hits).cumsum(0)
    recall = tp / num_gt
    precision = tp / (tp + fp)

    # interpolated precision: the best precision at this recall or any higher one
    envelope = precision.flip(0).cummax(0).values.flip(0)
    first = torch.searchsorted(recall, RECALL_POINTS.to(recall), side="left")
    reached = first < len(recall)
    interpolated = torch.zeros(len(RECALL_POINTS), dtype=torch.float64)
    interpolated[reached] = envelope[first[reached]]
    return float(interpolated.mean())


def froc(
    scores: Tensor, matched: Tensor, num_objects: int, num_cases: int
) -> tuple[list[float | None], float | None]:
    """Sensitivity at the rates of :data:`FP_PER_CASE`, detections pooled over classes.

    Args:
        scores: float [N], all detections of all cases and classes.
        matched: bool [N], whether each detection matches an object of its own class.
        num_objects: objects of all classes in all cases.
        num_cases: evaluated cases (the denominator of false positives per case).

    Returns:
        ``(sensitivity per rate, CPM)``; ``None`` everywhere when there are no objects.

    Notes:
        An operating point is a score threshold, so tied scores enter together; the
        sensitivity at a rate is the highest one among points with at most that many false
        positives per case (no interpolation between points).
    """
    if num_objects == 0:
        return [None] * len(FP_PER_CASE), None
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_scores, hits = scores[order], matched[order].double()
    tp, fp = hits.cumsum(0), (1.0 - hits).cumsum(0)
    # the last detection of each run of tied scores closes an operating point
    closes = torch.ones(len(scores), dtype=torch.bool)
    closes[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    sensitivity = torch.cat([torch.zeros(1, dtype=torch.float64), tp[closes] / num_objects])
    fp_rate = torch.cat([torch.zeros(1, dtype=torch.float64), fp[closes] / num_cases])

    at_rates = [float(sensitivity[fp_rate <= rate].max()) for rate in FP_PER_CASE]
    return at_rates, float(np.mean(at_rates))


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _threshold_key(iou: float) -> str:
    return f"{iou:g}"


def _box_coords(*collections: Mapping[str, tuple]) -> int:
    """Coordinates per box (4 in 2D, 6 in 3D), from the first box array that says so."""
    for collection in collections:
        for entry in collection.values():
            shape = np.shape(entry[0])
            if len(shape) == 2 and shape[1] in (4, 6):
                return shape[1]
    return 4  # no box anywhere: any dimension gives the same (empty) result


def _tensor(array: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(array, Tensor):
        return array.detach().cpu().to(dtype)
    return torch.as_tensor(np.asarray(array), dtype=dtype)


def _check_labels(case_id: str, labels: Tensor, class_ids: Sequence[int] | None) -> None:
    stray = [] if class_ids is None else sorted(set(labels.tolist()) - set(class_ids))
    if stray:
        raise ValueError(
            f"case {case_id}: predicted labels {stray} are not classes of the dataset "
            f"({sorted(class_ids)}); check that predictions and class names are of one task"
        )


def _match_all(
    predictions: Mapping[str, Prediction],
    ground_truth: Mapping[str, GroundTruth],
    iou_thresholds: Tensor,
    class_ids: Sequence[int] | None,
) -> list[CaseMatches]:
    """Match every ground-truth case (sorted by id) against its predictions."""
    unknown = sorted(set(predictions) - set(ground_truth))
    if unknown:
        logger.warning("ignoring predictions of %d cases without ground truth", len(unknown))
    coords = _box_coords(ground_truth, predictions)
    matches = []
    for case_id in sorted(ground_truth):
        gt_boxes, gt_labels = ground_truth[case_id]
        boxes, scores, labels = predictions.get(case_id, ([], [], []))
        labels = _tensor(labels, torch.long).reshape(-1)
        _check_labels(case_id, labels, class_ids)
        case = match_case(
            _tensor(boxes, torch.float64).reshape(-1, coords),
            _tensor(scores, torch.float64).reshape(-1),
            labels,
            _tensor(gt_boxes, torch.float64).reshape(-1, coords),
            _tensor(gt_labels, torch.long).reshape(-1),
            iou_thresholds,
            MAX_DETECTIONS,
        )
        matches.append(case)
    return matches


def _patient_ap(matches: Sequence[CaseMatches], class_id: int) -> float | None:
    """AP over cases: a case's score is its top score for the class, positive if it has one."""
    scores, positive = [], []
    num_positive = sum(bool((m.gt_labels == class_id).any()) for m in matches)
    for case in matches:
        case_scores = case.scores[case.labels == class_id]
        if len(case_scores):  # a case without a prediction of the class is never retrieved
            scores.append(float(case_scores.max()))
            positive.append(bool((case.gt_labels == class_id).any()))
    return average_precision(
        torch.tensor(scores, dtype=torch.float64), torch.tensor(positive, dtype=torch.bool),
        num_positive,
    )  # fmt: skip


def _ap_table(
    matches: Sequence[CaseMatches], thresholds: Sequence[float], class_ids: Sequence[int]
) -> dict[float, dict[int, float | None]]:
    """AP per threshold and class, detections pooled over cases in case order."""
    scores = torch.cat([m.scores for m in matches])
    labels = torch.cat([m.labels for m in matches])
    matched = torch.cat([m.matched for m in matches], dim=1)
    gt_labels = torch.cat([m.gt_labels for m in matches])
    table: dict[float, dict[int, float | None]] = {}
    for i, threshold in enumerate(thresholds):
        table[threshold] = {}
        for c in class_ids:
            of_class = labels == c
            num_gt = int((gt_labels == c).sum())
            table[threshold][c] = average_precision(scores[of_class], matched[i][of_class], num_gt)
    return table


def evaluate(
    predictions: Mapping[str, Prediction],
    ground_truth: Mapping[str, GroundTruth],
    class_names: Mapping[int, str] | None = None,
    iou_thresholds_extra: Sequence[float] = (),
) -> dict[str, Any]:
    """All metrics of ``documentation/evaluation.md`` for the cases of ``ground_truth``.

    Args:
        predictions: ``{case_id: (boxes float [N, 2*D], scores float [N], labels int [N])}``;
            a ground-truth case without an entry counts as a case without detections.
        ground_truth: ``{case_id: (boxes float [G, 2*D], labels int [G])}``, nndet's box
            convention; every case listed is evaluated, with or without objects.
        class_names: ``{class id: name}``; classes are reported under their names, and every
            class is reported. ``None``: the ids found in ground truth and predictions.
        iou_thresholds_extra: further IoU thresholds, each adding ``AP@T`` and ``mAP@T``.

    Returns:
        ``{"num_cases", "AP@0.1", "mAP@0.1", "mAP@0.1:0.5", "FROC@0.1", "patient_AP",
        "AP@T", "mAP@T" ...}``; classes without objects have AP ``None`` and stay out of
        means.
    """
    if not ground_truth:
        raise ValueError("no ground-truth cases to evaluate")
    extra = [float(t) for t in iou_thresholds_extra if float(t) not in IOU_THRESHOLDS]
    thresholds = list(IOU_THRESHOLDS) + list(dict.fromkeys(extra))
    if class_names is not None:
        class_names = {int(k): str(v) for k, v in class_names.items()}
    known_ids = None if class_names is None else sorted(class_names)
    matches = _match_all(
        predictions, ground_truth, torch.tensor(thresholds, dtype=torch.float64), known_ids
    )

    class_ids = known_ids
    if class_ids is None:
        found = set().union(*(set(m.labels.tolist()) | set(m.gt_labels.tolist()) for m in matches))
        class_ids = sorted(found)
    name = {c: str(c) if class_names is None else class_names[c] for c in class_ids}

    scores = torch.cat([m.scores for m in matches])
    matched = torch.cat([m.matched for m in matches], dim=1)
    gt_labels = torch.cat([m.gt_labels for m in matches])
    ap = _ap_table(matches, thresholds, class_ids)
    sensitivity, cpm = froc(
        scores, matched[thresholds.index(MAIN_IOU)], len(gt_labels), len(matches)
    )
    per_class_range = [_mean([ap[t][c] for t in IOU_THRESHOLDS]) for c in class_ids]
    result: dict[str, Any] = {
        "num_cases": len(matches),
        "AP@0.1": {name[c]: ap[MAIN_IOU][c] for c in class_ids},
        "mAP@0.1": _mean(list(ap[MAIN_IOU].values())),
        "mAP@0.1:0.5": _mean(per_class_range),
        "FROC@0.1": {"fp_per_case": list(FP_PER_CASE), "sensitivity": sensitivity, "CPM": cpm},
        "patient_AP": {name[c]: _patient_ap(matches, c) for c in class_ids},
    }
    for t in [float(t) for t in iou_thresholds_extra]:
        result[f"AP@{_threshold_key(t)}"] = {name[c]: ap[t][c] for c in class_ids}
        result[f"mAP@{_threshold_key(t)}"] = _mean(list(ap[t].values()))
    return result
