"""The planner: from a dataset fingerprint to named plans, without a GPU.

:func:`plan_experiment` is a pure function of the fingerprint and ``dataset.json``. It picks
the target spacing and axis order (nnU-Net's rules), the normalisation per modality, and per
plan the patch, batch and topology for a budget (:mod:`nndet.planning.budget`), the detection
levels and the anchors fitted to the training boxes (:mod:`nndet.planning.anchors`). The
rules are documented in ``documentation/planning.md``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

import nndet
from nndet.planning.anchors import ANCHORS_PER_AXIS, fit_anchors
from nndet.planning.budget import Budget, fit_patch_and_batch
from nndet.planning.plan import Normalization, Plan, Plans

logger = logging.getLogger(__name__)

# nnU-Net's anisotropy threshold for the target spacing rule (nnunetv2.configuration).
ANISO_THRESHOLD = 3.0
# A 3D task also gets a "2d" plan when its slice spacing exceeds this multiple of the in-plane
# spacing (after the target spacing rule): slices are then the better unit. Chosen above
# nnU-Net's 3 so that moderately thick slices (ratio ~3.3, as in Task104) stay 3D-only.
SLICE_PLAN_RATIO = 4.0
# (epochs, iterations per epoch). GPU: 12,500 steps, about an hour on a current GPU;
# nnDetection trains 60 x 2500 (150,000) steps, which takes days and which `nndet_train
# --epochs/--iters-per-epoch` can still ask for. CPU: 1,000 steps of well under a second.
SCHEDULES = {"gpu": (50, 250), "cpu": (20, 50)}


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Median spacing, with nnU-Net's rule for one much coarser axis.

    When the coarsest axis has a median spacing more than 3x the others' *and* fewer than a
    third of their voxels, the median would resample many cases coarser than they were
    acquired; that axis then takes the 10th percentile of its spacings instead (never finer
    than the other axes).

    Args:
        spacings: float [N, D] per-case spacing (raw axes).
        shapes: float [N, D] per-case shape after cropping.
    """
    target = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [d for d in range(len(target)) if d != worst]
    if not others:
        return target, []
    aniso_spacing = target[worst] > ANISO_THRESHOLD * max(target[others])
    aniso_voxels = median_shape[worst] * ANISO_THRESHOLD < min(median_shape[others])
    if aniso_spacing and aniso_voxels:
        median = target[worst]
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]))
        note = (
            f"anisotropic axis {worst}: target spacing {target[worst]:.4g} (10th percentile)"
            f" instead of the median {median:.4g}"
        )
        return target, [note]
    return target, []


def transposition(spacing: np.ndarray) -> list[int]:
    """Stored axis order: the coarsest axis first, the others in raw order (as nnU-Net v2)."""
    if len(spacing) == 2:
        return [0, 1]
    worst = int(np.argmax(spacing))
    return [worst] + [d for d in range(len(spacing)) if d != worst]


def normalization(fingerprint: dict, modalities: dict[str, str]) -> tuple[list, list[str]]:
    """Per modality: CT clips to the foreground 0.5/99.5 percentiles and z-scores with the
    foreground mean and std; any other modality is z-scored per case."""
    schemes, notes = [], []
    for index, (key, name) in enumerate(sorted(modalities.items(), key=lambda kv: int(kv[0]))):
        stats = fingerprint["intensity"][index]
        if name.strip().lower() != "ct":
            schemes.append(Normalization("zscore"))
        elif stats["mean"] is None:
            notes.append(f"modality {key} is CT but no case has objects: per-case z-score")
            schemes.append(Normalization("zscore"))
        else:
            std = max(stats["std"], 1e-8)
            lower, upper = stats["percentile_00_5"], stats["percentile_99_5"]
            schemes.append(Normalization("ct", stats["mean"], std, lower, upper))
    return schemes, notes


def _stored_geometry(fingerprint: dict, target: np.ndarray, order: list[int]) -> dict[str, Any]:
    """Median shape, total voxels and box sizes at the target spacing, in stored axis order."""
    cases = fingerprint["cases"].values()
    spacings = np.array([c["spacing"] for c in cases], dtype=np.float64)
    shapes = np.array([c["shape_after_crop"] for c in cases], dtype=np.float64)
    resampled = np.round(shapes * spacings / target)
    sizes_mm = [o["size_mm"] for c in cases for o in c["objects"]]
    boxes = np.array(sizes_mm, dtype=np.float64).reshape(-1, len(target)) / target
    return {
        "median_shape": np.median(resampled, axis=0)[order],
        "dataset_voxels": float(np.prod(resampled, axis=1).sum()),
        "box_sizes": boxes[:, order],
    }


def plan_experiment(
    fingerprint: dict,
    dataset_json: dict,
    target: str = "gpu",
    gpu_memory_gb: float = 8.0,
) -> Plans:
    """All plans of a task, and which one is the default.

    Args:
        fingerprint: from :func:`nndet.planning.fingerprint.compute_fingerprint`.
        dataset_json: the task's ``dataset.json``.
        target: "gpu" (memory budget ``gpu_memory_gb``) or "cpu" (a 2-core training step
            well under a second).
        gpu_memory_gb: GPU memory to plan for; ignored for the CPU.

    Returns:
        ``"2d"`` for 2D data; ``"3d"`` for 3D data, plus ``"2d"`` when the slice spacing is
        more than ``SLICE_PLAN_RATIO`` times the in-plane spacing. The default is the plan
        whose dimension matches the data.
    """
    budget = Budget(target, gpu_memory_gb)
    data_dim = int(dataset_json["dim"])
    cases = list(fingerprint["cases"].values())
    spacings = np.array([c["spacing"] for c in cases], dtype=np.float64)
    shapes = np.array([c["shape_after_crop"] for c in cases], dtype=np.float64)
    if spacings.shape[1] != data_dim:
        raise ValueError(
            f"dataset.json says dim {data_dim} but the images have {spacings.shape[1]} axes"
        )

    spacing, notes = target_spacing(spacings, shapes)
    order = transposition(spacing)
    stored_spacing = spacing[order]
    norms, norm_notes = normalization(fingerprint, dataset_json["modalities"])
    geometry = _stored_geometry(fingerprint, spacing, order)
    common = {
        "data_dim": data_dim,
        "spacing": stored_spacing.tolist(),
        "transpose": order,
        "normalization": norms,
        "num_classes": len(dataset_json["labels"]),
        "num_modalities": len(dataset_json["modalities"]),
        "notes": notes + norm_notes,
        "budget": budget,
        "geometry": geometry,
    }

    plans = {}
    if data_dim == 2:
        plans["2d"] = _make_plan("2d", axes=[0, 1], **common)
    else:
        plans["3d"] = _make_plan("3d", axes=[0, 1, 2], **common)
        ratio = float(stored_spacing[0] / max(stored_spacing[1:]))
        if ratio > SLICE_PLAN_RATIO:
            common["notes"] = common["notes"] + [
                f"slice spacing {ratio:.2f}x in-plane > {SLICE_PLAN_RATIO}: 2d plan added"
            ]
            plans["2d"] = _make_plan("2d", axes=[1, 2], **common)
    default = "2d" if data_dim == 2 else "3d"
    return Plans(plans=plans, default=default, nndet_version=nndet.__version__)


def _make_plan(
    name: str,
    axes: list[int],
    data_dim: int,
    spacing: list[float],
    transpose: list[int],
    normalization: list[Normalization],
    num_classes: int,
    num_modalities: int,
    notes: list[str],
    budget: Budget,
    geometry: dict[str, Any],
) -> Plan:
    """One plan whose network works on the stored axes ``axes`` (all of them, or in-plane)."""
    dim = len(axes)
    net_spacing = [spacing[a] for a in axes]
    median_shape = [float(geometry["median_shape"][a]) for a in axes]
    num_anchors = ANCHORS_PER_AXIS**dim
    fit = fit_patch_and_batch(
        net_spacing,
        median_shape,
        geometry["dataset_voxels"],
        num_modalities,
        num_classes,
        num_anchors,
        budget,
    )

    box_sizes = torch.from_numpy(geometry["box_sizes"][:, axes])
    strides = [fit.topology.level_stride(level) for level in fit.detection_levels]
    anchors, coverage = fit_anchors(box_sizes, strides)
    plan_notes = list(notes)
    if len(box_sizes) == 0:
        plan_notes.append("no objects in the training cases: default anchors, coverage 0")
    elif np.any(np.percentile(box_sizes.numpy(), 95, axis=0) > np.array(fit.patch_size)):
        plan_notes.append("5% of the objects are larger than the patch along some axis")

    epochs, iters = SCHEDULES[budget.target]
    return Plan(
        name=name,
        dim=dim,
        data_dim=data_dim,
        spacing=list(spacing),
        transpose=list(transpose),
        normalization=list(normalization),
        patch_size=fit.patch_size,
        batch_size=fit.batch_size,
        topology=fit.topology,
        detection_levels=fit.detection_levels,
        anchors=anchors,
        anchor_iou=round(coverage, 4),
        num_classes=num_classes,
        num_modalities=num_modalities,
        epochs=epochs,
        iters_per_epoch=iters,
        target=budget.target,
        gpu_memory_gb=budget.gpu_memory_gb if budget.target == "gpu" else None,
        median_shape=[int(round(v)) for v in geometry["median_shape"]],
        extra={
            "notes": plan_notes,
            "feature_map_elements_per_sample": fit.estimate,
            "budget_capacity": fit.capacity,
            "num_training_boxes": len(box_sizes),
            "anchors_per_axis": ANCHORS_PER_AXIS,
        },
    )
