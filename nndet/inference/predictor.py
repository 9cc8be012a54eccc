"""Predict cases with sliding windows, mirroring and an ensemble; validate a fold.

Every tile of every mirror of every model is one *view*; its raw candidates are kept in a
:class:`~nndet.inference.views.CaseViews` and consolidated by
:func:`~nndet.inference.consolidate.consolidate_views`. Boxes come back in the coordinates of
the original image through the preprocessing's mapping.

A model is anything with ``predict(images float [B, C, *patch]) -> list of B dicts`` holding
``boxes`` (float [N, 2*dim], patch voxels), ``scores`` (float [N]) and ``labels`` (long [N])
before any NMS, as :meth:`nndet.model.detector.RetinaUNet.predict` returns them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nndet.inference.consolidate import InferenceSettings, consolidate_views
from nndet.inference.sliding_window import (
    Predictor,
    make_tile_grid,
    predict_views,
    resolve_device,
    tile_size_for,
)
from nndet.inference.validation import VIEWS_DIR, write_predictions_from_views
from nndet.inference.views import CaseViews, save_views
from nndet.planning.plan import Plan
from nndet.preprocessing.geometry import boxes_to_original

__all__ = ["CasePrediction", "predict_case", "predict_validation", "resolve_device",
           "write_validation"]  # fmt: skip
logger = logging.getLogger(__name__)

Progress = Callable[[Iterable, int], Iterable]  # (items, count) -> the same items


@dataclass
class CasePrediction:
    """The prediction of one case: its views and the consolidated boxes.

    ``boxes`` are float [N, 2*D] in the original image's voxels (raw array axes), sorted by
    score; ``scores`` float [N]; ``labels`` long [N].
    """

    views: CaseViews
    boxes: Tensor
    scores: Tensor
    labels: Tensor


def predict_case(
    models: Sequence[Predictor],
    data: Any,
    properties: dict[str, Any],
    plan: Plan,
    settings: InferenceSettings | None = None,
    case_id: str = "case",
    mirror: bool = True,
    overlap: float = 0.5,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
) -> CasePrediction:
    """Predict a stored case with an ensemble and map its boxes to the original image.

    Args:
        models: one model per fold (see the module docstring for the interface).
        data: float [C, *spatial] stored case, as ``CaseStore.load_case`` or
            ``preprocess_image_for_inference`` give it.
        properties: the case's preprocessing properties (they map boxes back).
        plan: gives the patch size and the network's and data's dimensions.
        settings: how views are consolidated (default :class:`InferenceSettings`).
        case_id: the name recorded in the views.
        mirror: test-time mirroring over all ``2**dim`` flips.
        overlap: fraction shared by neighbouring tiles.
        batch_size: tiles per network call (default: the plan's batch size).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Returns:
        The views (stored-case voxels) and the consolidated boxes in original-image voxels.
    """
    settings = settings or InferenceSettings()
    if not models:
        raise ValueError(f"case {case_id}: no models to predict with; train a fold first")
    image_shape = list(data.shape[1:])
    if len(image_shape) != plan.data_dim:
        raise ValueError(
            f"case {case_id}: data has {len(image_shape)} spatial axes, plan {plan.name} "
            f"expects {plan.data_dim}: preprocess the case with this plan"
        )
    grid = make_tile_grid(image_shape, tile_size_for(plan), overlap)
    logger.info("case %s: %d tiles x %d models", case_id, grid.num_tiles, len(models))

    fields = predict_views(
        models, data, grid, plan.dim, mirror, batch_size or plan.batch_size, device
    )
    views = CaseViews(
        case_id=case_id,
        tile_starts=grid.starts(),
        tile_size=torch.tensor(grid.tile_size, dtype=torch.long),
        image_shape=torch.tensor(image_shape, dtype=torch.long),
        net_dim=plan.dim,
        num_models=len(models),
        properties=properties,
        **fields,
    )
    boxes, scores, labels = consolidate_views(views, settings)
    return CasePrediction(views, boxes_to_original(boxes, properties), scores, labels)


def predict_validation(
    models: Sequence[Predictor],
    store: Any,
    case_ids: Sequence[str],
    plan: Plan,
    fold_dir: Path | str,
    labels_dir: Path | str | None = None,
    class_names: Mapping[int, str] | None = None,
    settings: InferenceSettings | None = None,
    mirror: bool = True,
    overlap: float = 0.5,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> dict[str, Any] | None:
    """Predict a fold's validation cases: views, prediction files and metrics.

    Args:
        models: the fold's model (a list of one), or any ensemble.
        store: the plan's :class:`~nndet.preprocessing.storage.CaseStore`.
        case_ids: the fold's validation cases.
        plan: the plan the models were trained with.
        fold_dir: ``<model>_<plan>/fold<K>``.
        labels_dir: ``raw_splitted/labelsTr`` for the metrics (``None``: no metrics).
        class_names: ``{class id: name}``.
        settings: consolidation settings (default :class:`InferenceSettings`).
        mirror: test-time mirroring.
        overlap: tile overlap.
        device: where the networks run.
        progress: wraps the loop over cases (e.g. tqdm in a command).

    Returns:
        The metrics, or None without ``labels_dir``.
    """
    settings = settings or InferenceSettings()
    fold_dir = Path(fold_dir)
    cases = list(case_ids)
    for case_id in progress(cases, len(cases)) if progress else cases:
        data, _, properties = store.load_case(case_id)
        result = predict_case(
            models, data, properties, plan, settings, case_id=case_id, mirror=mirror,
            overlap=overlap, device=device,
        )  # fmt: skip
        save_views(result.views, fold_dir / VIEWS_DIR)
        logger.info("case %s: %d raw boxes, %d kept", case_id, len(result.views.boxes),
                    len(result.boxes))  # fmt: skip
    return write_predictions_from_views(fold_dir, cases, settings, labels_dir, class_names)


def write_validation(
    models: Sequence[Predictor],
    plan: Plan,
    store: Any,
    case_ids: Sequence[str],
    fold_dir: Path | str,
    labels_dir: Path | str | None = None,
    dataset_json: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    settings: InferenceSettings | None = None,
    mirror: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any] | None:
    """Training's validation: :func:`predict_validation` with class names from a dataset.json.

    Args:
        dataset_json: the task's ``dataset.json`` contents; its ``labels`` name the classes.
        The others: as :func:`predict_validation`.
    """
    labels = (dataset_json or {}).get("labels") or {}
    class_names = {int(k): str(v) for k, v in labels.items()} or None
    return predict_validation(
        models, store, case_ids, plan, fold_dir, labels_dir, class_names, settings,
        mirror=mirror, device=device, progress=progress,
    )  # fmt: skip
