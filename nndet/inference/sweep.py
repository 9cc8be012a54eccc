"""Tune the inference settings on the stored out-of-fold views of the trained folds.

Training keeps the raw per-view boxes of every validation case (``fold<K>/val_views``), so
the sweep re-consolidates them under other :class:`InferenceSettings` without a network and
scores each setting against the raw ground truth (``raw_splitted/labelsTr``), in the
original image's coordinates. The search is coordinate-wise: starting from the defaults,
each parameter of :data:`SEARCH_GRID` in turn is tried over its grid while the others stay
at their best so far, and the best value is kept (ties keep the earlier value, so a default
is only left for a real gain). Every distinct setting is consolidated once per case.

AP never drops when low-scoring boxes are added, so the sweep also picks an operating
point: the score threshold that maximises F1 over all validation boxes of the chosen
setting. Everything is written to ``<model>_<plan>/inference_plan.json``
(``documentation/sweep.md``), which :func:`load_inference_settings` reads for prediction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nndet import __version__
from nndet.data.io import load_json, save_json
from nndet.data.paths import data_root
from nndet.evaluation.folders import (
    class_names_from_dataset_json,
    find_dataset_json,
    list_label_cases,
    read_ground_truth_case,
)
from nndet.evaluation.matching import match_case
from nndet.evaluation.metrics import MAIN_IOU, evaluate
from nndet.inference.consolidate import InferenceSettings, consolidate_views
from nndet.inference.models import VIEWS_DIR, model_identity, trained_folds
from nndet.inference.views import CaseViews, list_views, load_views, views_path
from nndet.preprocessing.geometry import boxes_to_original

logger = logging.getLogger(__name__)

PLAN_NAME = "inference_plan.json"
DEFAULT_METRIC = "mAP@0.1"
NAMED_METRICS = ("mAP@0.1", "mAP@0.1:0.5", "CPM")

# The parameters tuned, in the order they are tuned, each with its grid. Mirroring goes
# first because it decides which views every later step sees; the within-view NMS comes
# before WBC, which clusters what it leaves. Sizes are stored-case voxels (the plan's
# spacing); 0.01 is the default's "drop only degenerate boxes".
SEARCH_GRID: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("use_mirror", (True, False)),
    ("nms_iou_per_view", (0.3, 0.5, 0.7, None)),
    ("ensemble_iou", (0.1, 0.2, 0.3, 0.4, 0.5)),
    ("min_box_size", (0.01, 1.0, 2.0, 4.0)),
)

Progress = Callable[[Iterable, int], Iterable]  # (items, count) -> the same items
Prediction = tuple[Tensor, Tensor, Tensor]  # boxes float [N, 2*D], scores [N], labels [N]
GroundTruth = tuple[Tensor, Tensor]  # boxes float [G, 2*D], labels long [G]


@dataclass(frozen=True)
class SweepCase:
    """One validation case: its views and the properties that map its boxes back."""

    fold: int
    views: CaseViews
    properties: dict[str, Any]


def check_metric(metric: str) -> float | None:
    """Validate a metric name; returns the extra IoU threshold it needs (``mAP@T``), if any.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if metric in NAMED_METRICS:
        return None
    if metric.startswith("mAP@"):
        try:
            iou = float(metric[len("mAP@") :])
        except ValueError:
            iou = -1.0
        if 0.0 < iou <= 1.0:
            return iou
    raise ValueError(
        f"unknown metric {metric!r}: use one of {', '.join(NAMED_METRICS)} or mAP@T "
        "for an IoU threshold T in (0, 1], e.g. mAP@0.3"
    )


def metric_value(
    predictions: Mapping[str, Prediction],
    ground_truth: Mapping[str, GroundTruth],
    metric: str = DEFAULT_METRIC,
    class_names: Mapping[int, str] | None = None,
) -> float | None:
    """One metric of :func:`nndet.evaluation.metrics.evaluate` (``CPM`` is FROC's CPM)."""
    extra = check_metric(metric)
    metrics = evaluate(predictions, ground_truth, class_names, [extra] if extra else [])
    return metrics["FROC@0.1"]["CPM"] if metric == "CPM" else metrics[metric]


def consolidate_case(case: SweepCase, settings: InferenceSettings) -> Prediction:
    """The consolidated boxes of one case under ``settings``, in original-image voxels."""
    boxes, scores, labels = consolidate_views(case.views, settings)
    return boxes_to_original(boxes, case.properties), scores, labels


_POOL_CASES: Sequence[SweepCase] = ()  # the cases, inherited by forked workers


def _init_worker() -> None:
    # one thread per process: the workers share the cores, and a forked OpenMP pool can hang
    torch.set_num_threads(1)


def _consolidate_job(job: tuple[int, InferenceSettings]) -> Prediction:
    return consolidate_case(_POOL_CASES[job[0]], job[1])


@contextlib.contextmanager
def case_consolidator(
    cases: Sequence[SweepCase], processes: int = 1
) -> Iterator[Callable[[InferenceSettings], dict[str, Prediction]]]:
    """A function ``settings -> {case_id: prediction}`` over all cases, run by ``processes``.

    The worker processes are forked once, holding the cases, and serve every setting; a
    setting travels to them and the (at most 100) boxes per case travel back. While the
    context is open, torch in this process runs on one thread: the tensors of a case are
    small, and its thread pool costs more than it gains (measured on a busy 2-core machine,
    40 Task101-sized cases and 12 settings: 8 s on one thread, 2 min on two).
    """
    global _POOL_CASES
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if processes <= 1 or len(cases) < 2:
            yield lambda settings: {c.views.case_id: consolidate_case(c, settings) for c in cases}
            return
        _POOL_CASES = cases
        context = multiprocessing.get_context("fork")  # spawn would re-import torch per worker
        with context.Pool(min(processes, len(cases)), initializer=_init_worker) as pool:

            def run(settings: InferenceSettings) -> dict[str, Prediction]:
                jobs = [(i, settings) for i in range(len(cases))]
                results = pool.map(_consolidate_job, jobs, chunksize=1)
                return {c.views.case_id: r for c, r in zip(cases, results, strict=True)}

            yield run
    finally:
        _POOL_CASES = ()
        torch.set_num_threads(threads)


def coordinate_search(
    score: Callable[[InferenceSettings], float],
    start: InferenceSettings,
    grid: Sequence[tuple[str, Sequence[Any]]] = SEARCH_GRID,
    progress: Progress | None = None,
) -> tuple[InferenceSettings, float, list[dict[str, Any]]]:
    """Tune one parameter at a time, keeping the best value of each before the next.

    Args:
        score: the metric of a setting (higher is better); called once per distinct setting.
        start: the setting the search starts from.
        grid: ``(parameter, values)`` pairs, tuned in this order.
        progress: wraps the iteration over all ``(parameter, value)`` trials.

    Returns:
        The best setting, its metric, and one record per distinct setting tried:
        ``{"parameter", "value", "settings", "metric"}``, in the order tried; the start
        comes first, with parameter and value ``None``.
    """
    cache: dict[InferenceSettings, float] = {}
    search: list[dict[str, Any]] = []

    def evaluate_once(settings: InferenceSettings, parameter: str | None) -> float:
        if settings not in cache:
            cache[settings] = score(settings)
            value = getattr(settings, parameter) if parameter else None
            search.append(
                {"parameter": parameter, "value": value, "settings": settings.to_dict(),
                 "metric": cache[settings]}
            )  # fmt: skip
        return cache[settings]

    best, best_value = start, evaluate_once(start, None)
    trials: Iterator[tuple[str, Any]] = ((p, v) for p, values in grid for v in values)
    total = sum(len(values) for _, values in grid)
    for parameter, value in progress(trials, total) if progress else trials:
        candidate = dataclasses.replace(best, **{parameter: value})
        candidate_value = evaluate_once(candidate, parameter)
        if candidate_value > best_value:  # strictly: a tie keeps what came first
            best, best_value = candidate, candidate_value
    return best, best_value, search


def operating_point(
    predictions: Mapping[str, Prediction],
    ground_truth: Mapping[str, GroundTruth],
    iou: float = MAIN_IOU,
) -> dict[str, float | None]:
    """The score threshold that maximises F1, detections of all classes pooled.

    A detection is true when it matches an object of its class at ``iou``, with the greedy
    matching of the evaluation (at most 100 detections per case and class).

    Args:
        predictions: ``{case_id: (boxes float [N, 2*D], scores [N], labels [N])}``.
        ground_truth: ``{case_id: (boxes float [G, 2*D], labels [G])}``; every case counts.

    Returns:
        ``{"score_threshold", "precision", "recall", "f1", "fp_per_case"}``: boxes scoring at
        or above the threshold are kept. All ``None`` when there is no object or no
        true detection (F1 is then 0 or undefined at every threshold).
    """
    scores, matched, num_objects = [], [], 0
    thresholds = torch.tensor([iou], dtype=torch.float64)
    for case_id, (gt_boxes, gt_labels) in ground_truth.items():
        gt_boxes, gt_labels = torch.as_tensor(gt_boxes), torch.as_tensor(gt_labels).long()
        boxes, case_scores, labels = predictions.get(case_id, ([], [], []))
        case = match_case(
            torch.as_tensor(boxes).double().reshape(-1, gt_boxes.shape[-1]),
            torch.as_tensor(case_scores).double(), torch.as_tensor(labels).long(),
            gt_boxes.double(), gt_labels, thresholds,
        )  # fmt: skip
        scores.append(case.scores)
        matched.append(case.matched[0])
        num_objects += len(gt_labels)
    none = dict.fromkeys(("score_threshold", "precision", "recall", "f1", "fp_per_case"))
    if num_objects == 0 or not any(bool(m.any()) for m in matched):
        return none

    all_scores = torch.cat(scores)
    order = torch.sort(all_scores, descending=True, stable=True).indices
    sorted_scores, hits = all_scores[order], torch.cat(matched)[order].double()
    tp, fp = hits.cumsum(0), (1.0 - hits).cumsum(0)
    # a threshold keeps all tied scores together: only the last of a run closes a point
    closes = torch.ones(len(sorted_scores), dtype=torch.bool)
    closes[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    f1 = torch.where(closes, 2 * tp / (tp + fp + num_objects), torch.full_like(tp, -1.0))
    best = int(torch.argmax(f1))  # the first maximum: the highest such threshold
    return {
        "score_threshold": float(sorted_scores[best]),
        "precision": float(tp[best] / (tp[best] + fp[best])),
        "recall": float(tp[best] / num_objects),
        "f1": float(f1[best]),
        "fp_per_case": float(fp[best] / len(ground_truth)),
    }


def load_cases(model_dir: Path, folds: Sequence[int], preprocessed: Path | None) -> list[SweepCase]:
    """The validation views of ``folds`` with the properties that map them to the image.

    Views written by training carry their case's properties; older ones fall back on
    ``preprocessed/<plan>/CASE.json``. A case found in several folds keeps its first fold.
    """
    cases: dict[str, SweepCase] = {}
    for fold in folds:
        folder = model_dir / f"fold{fold}" / VIEWS_DIR
        for case_id in list_views(folder):
            if case_id in cases:
                logger.warning("case %s is in folds %d and %d: using fold %d",
                               case_id, cases[case_id].fold, fold, cases[case_id].fold)  # fmt: skip
                continue
            views = load_views(views_path(folder, case_id))
            properties = views.properties or _stored_properties(preprocessed, case_id)
            cases[case_id] = SweepCase(fold, views, properties)
    return [cases[c] for c in sorted(cases)]


def _stored_properties(preprocessed: Path | None, case_id: str) -> dict[str, Any]:
    if preprocessed is None:
        raise FileNotFoundError(
            f"the views of case {case_id} hold no properties and no preprocessed folder is "
            "known: pass preprocessed_dir, or predict the validation cases again"
        )
    from nndet.preprocessing.storage import CaseStore  # nnunetv2 import: only when needed

    return CaseStore(preprocessed).load_properties(case_id)


def load_ground_truth(labels_dir: Path, case_ids: Sequence[str]) -> dict[str, GroundTruth]:
    """Boxes and classes of ``case_ids`` from a raw labels folder, read once."""
    maps = list_label_cases(labels_dir)
    missing = sorted(set(case_ids) - set(maps))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} validation cases have no labels in {labels_dir}, e.g. "
            f"{missing[0]}: point labels_dir (--labels) at the task's raw_splitted/labelsTr"
        )
    truth = {}
    for case_id in case_ids:
        boxes, labels = read_ground_truth_case(maps[case_id])
        truth[case_id] = (torch.from_numpy(boxes), torch.from_numpy(labels))
    return truth


def sweep(
    model_dir: Path | str,
    folds: Sequence[int] | None = None,
    metric: str = DEFAULT_METRIC,
    labels_dir: Path | str | None = None,
    preprocessed_dir: Path | str | None = None,
    grid: Sequence[tuple[str, Sequence[Any]]] = SEARCH_GRID,
    progress: Progress | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Tune the inference settings of a model folder and write ``inference_plan.json``.

    Args:
        model_dir: ``<NNDET_MODELS>/TaskNNN_Name/<model>_<plan>``.
        folds: the folds whose validation views are used (default: every trained one).
        metric: what is maximised: ``mAP@0.1``, ``mAP@0.1:0.5``, ``CPM`` or ``mAP@T``.
        labels_dir: the raw labels of the validation cases (default:
            ``<NNDET_DATA>/TaskNNN_Name/raw_splitted/labelsTr``).
        preprocessed_dir: ``preprocessed/<plan>``, read only for views without properties.
        grid: the parameters and values searched, in order (default :data:`SEARCH_GRID`).
        progress: wraps the iteration over the settings tried.
        processes: worker processes that consolidate cases in parallel (1: none).

    Returns:
        The record written to ``model_dir/inference_plan.json`` (``documentation/sweep.md``).
    """
    model_dir = Path(model_dir)
    check_metric(metric)
    model, plan = model_identity(model_dir)
    folds = _check_folds(model_dir, folds)
    cases, truth, names = _load_inputs(model_dir, plan, folds, labels_dir, preprocessed_dir)
    if not any(any(axes for axes in c.views.mirror_axes) for c in cases):
        grid = [(p, v) for p, v in grid if p != "use_mirror"]  # nothing was mirrored

    predictions: dict[InferenceSettings, dict[str, Prediction]] = {}
    with case_consolidator(cases, processes) as consolidate:

        def score(settings: InferenceSettings) -> float:
            predictions[settings] = consolidate(settings)
            return float(metric_value(predictions[settings], truth, metric, names) or 0.0)

        best, best_value, search = coordinate_search(score, InferenceSettings(), grid, progress)
    point = operating_point(predictions[best], truth)
    if point["score_threshold"] is None:
        logger.warning("no validation box matches an object: no operating point is chosen")
    best = dataclasses.replace(best, score_threshold=point.pop("score_threshold"))

    record = {
        "nndet_version": __version__, "model": model, "plan": plan, "folds": list(folds),
        "num_cases": len(cases), "metric": metric, "metric_default": search[0]["metric"],
        "metric_tuned": best_value,
        "settings": best.to_dict(), "score_threshold": best.score_threshold,
        "operating_point": point, "search": search,
    }  # fmt: skip
    save_json(record, model_dir / PLAN_NAME)
    logger.info("wrote %s", model_dir / PLAN_NAME)
    return record


def _load_inputs(
    model_dir: Path, plan: str, folds: Sequence[int], labels_dir: Path | str | None,
    preprocessed_dir: Path | str | None,
) -> tuple[list[SweepCase], dict[str, GroundTruth], dict[int, str] | None]:  # fmt: skip
    """The validation cases, their ground truth and the class names."""
    task = data_root() / model_dir.parent.name
    labels_dir = Path(labels_dir) if labels_dir else task / "raw_splitted" / "labelsTr"
    if preprocessed_dir is None and (task / "preprocessed" / plan).is_dir():
        preprocessed_dir = task / "preprocessed" / plan

    cases = load_cases(model_dir, folds, Path(preprocessed_dir) if preprocessed_dir else None)
    truth = load_ground_truth(labels_dir, [c.views.case_id for c in cases])
    logger.info("sweep of %s on %d validation cases of folds %s", model_dir, len(cases), folds)
    if not any(len(labels) for _, labels in truth.values()):
        raise ValueError(f"the validation cases of {model_dir} hold no object: nothing to tune")
    return cases, truth, _class_names(model_dir, labels_dir)


def _check_folds(model_dir: Path, folds: Sequence[int] | None) -> list[int]:
    trained = trained_folds(model_dir, needs="views")
    task = model_dir.parent.name.split("_")[0]
    if not trained:
        raise FileNotFoundError(
            f"no trained fold with validation views in {model_dir}: run "
            f"`nndet_train {task} -f 0` first (or -f all for the five folds)"
        )
    missing = sorted(set(folds or []) - set(trained))
    if missing:
        raise FileNotFoundError(
            f"fold {missing[0]} has no validation views in {model_dir}/fold{missing[0]}: run "
            f"`nndet_train {task} -f {missing[0]}`, or sweep the trained folds {trained}"
        )
    return sorted(set(folds)) if folds else trained


def _class_names(model_dir: Path, labels_dir: Path) -> dict[int, str] | None:
    path = model_dir / "dataset.json"
    path = path if path.is_file() else find_dataset_json(labels_dir)
    return class_names_from_dataset_json(path) if path else None


def load_inference_settings(model_dir: Path | str) -> tuple[InferenceSettings, float | None]:
    """The settings and score threshold chosen by the sweep of a model folder.

    Without ``inference_plan.json`` the defaults are returned, with a warning: prediction
    then works, untuned and without an operating point.
    """
    path = Path(model_dir) / PLAN_NAME
    if not path.is_file():
        logger.warning(
            "no %s in %s: using the default inference settings (run nndet_sweep to tune them)",
            PLAN_NAME, model_dir,
        )  # fmt: skip
        return InferenceSettings(), None
    record = load_json(path)
    settings = InferenceSettings.from_dict(record["settings"])
    return settings, record.get("score_threshold")
