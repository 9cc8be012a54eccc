"""A fold's validation outputs: prediction files and metrics, from predictions or views.

For fold ``K`` of ``<model>_<plan>`` (DESIGN.md, "Folders and files")::

    fold<K>/val_views/CASE.pt               every view's raw boxes (nndet.inference.views)
    fold<K>/val_predictions/CASE_boxes.json consolidated boxes in the original image
    fold<K>/val_predictions/predictions.csv
    fold<K>/val_metrics.json                nndet_eval's metrics against the raw labels

:func:`write_predictions_from_views` writes the last three from stored views alone, which is
what validation does after predicting (:func:`nndet.inference.predictor.predict_validation`)
and what the sweep can redo with other settings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from nndet.data.io import save_json
from nndet.data.predictions import (
    read_case_prediction,
    write_case_prediction,
    write_predictions_csv,
)
from nndet.evaluation.folders import list_label_cases, read_ground_truth_case
from nndet.evaluation.metrics import evaluate
from nndet.inference.consolidate import InferenceSettings, consolidate_views
from nndet.inference.views import CaseViews, load_views, views_path
from nndet.preprocessing.geometry import boxes_to_original

logger = logging.getLogger(__name__)

VIEWS_DIR = "val_views"
PREDICTIONS_DIR = "val_predictions"
METRICS_NAME = "val_metrics.json"


def consolidate_to_original(
    views: CaseViews, settings: InferenceSettings | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Consolidate stored views and map the boxes to the original image.

    Returns:
        ``(boxes float [M, 2*D] in original-image voxels, scores float [M], labels long [M])``.
    """
    boxes, scores, labels = consolidate_views(views, settings)
    return boxes_to_original(boxes, views.properties), scores, labels


def write_case(
    out_dir: Path | str,
    case_id: str,
    prediction: tuple[Tensor, Tensor, Tensor],
    properties: Mapping[str, Any],
    class_names: Mapping[int, str] | None,
    score_threshold: float | None,
) -> Path:
    """Write one case's ``CASE_boxes.json`` with its original geometry."""
    geometry = dict(properties["original_geometry"])
    geometry.setdefault("spacing", properties.get("original_spacing"))
    boxes, scores, labels = prediction
    return write_case_prediction(
        out_dir, case_id, boxes, scores, labels, class_names, geometry,
        image_shape=geometry["shape"], score_threshold=score_threshold,
    )  # fmt: skip


def score_predictions(
    predictions: Mapping[str, tuple[Tensor, Tensor, Tensor]],
    labels_dir: Path | str,
    class_names: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """Metrics of ``{case: (boxes, scores, labels)}`` against those cases of a labels folder.

    Only the predicted cases are evaluated (a fold's validation cases, not the whole folder).
    """
    labelled = list_label_cases(labels_dir)
    missing = sorted(set(predictions) - set(labelled))
    if missing:
        raise FileNotFoundError(
            f"no labels in {labels_dir} for {len(missing)} predicted cases ({missing[:5]}): "
            "point labels_dir at the task's raw_splitted/labelsTr"
        )
    truth = {case: read_ground_truth_case(labelled[case]) for case in predictions}
    numpy = {c: tuple(t.detach().cpu().numpy() for t in p) for c, p in predictions.items()}
    return evaluate(numpy, truth, class_names)


def write_predictions_from_views(
    fold_dir: Path | str,
    case_ids: Sequence[str],
    settings: InferenceSettings,
    labels_dir: Path | str | None = None,
    class_names: Mapping[int, str] | None = None,
    predictions_dir: Path | str | None = None,
) -> dict[str, Any] | None:
    """Consolidate stored views, write the prediction folder and, with labels, the metrics.

    Args:
        fold_dir: ``<model>_<plan>/fold<K>`` holding ``val_views/``.
        case_ids: the cases to consolidate.
        settings: consolidation settings.
        labels_dir: raw labels folder; ``None`` skips the metrics.
        class_names: ``{class id: name}`` for the files and the metrics.
        predictions_dir: where to write (default ``fold_dir/val_predictions``).

    Returns:
        The metrics (also in ``fold_dir/val_metrics.json``), or None without labels.
    """
    fold_dir = Path(fold_dir)
    out_dir = Path(predictions_dir) if predictions_dir else fold_dir / PREDICTIONS_DIR
    predictions, records = {}, []
    for case_id in case_ids:
        views = load_views(views_path(fold_dir / VIEWS_DIR, case_id))
        predictions[case_id] = consolidate_to_original(views, settings)
        path = write_case(
            out_dir, case_id, predictions[case_id], views.properties, class_names,
            settings.score_threshold,
        )  # fmt: skip
        records.append(read_case_prediction(path))
    write_predictions_csv(out_dir, records)

    if labels_dir is None:
        return None
    metrics = score_predictions(predictions, labels_dir, class_names)
    save_json(metrics, fold_dir / METRICS_NAME)
    logger.info("fold %s: mAP@0.1 %s over %d cases", fold_dir, metrics["mAP@0.1"], len(case_ids))
    return metrics
