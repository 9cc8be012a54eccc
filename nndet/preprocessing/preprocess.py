"""Preprocess raw cases for a plan: crop to nonzero, transpose, normalise, resample, store.

The steps follow nnU-Net's ``DefaultPreprocessor`` and reuse its functions; the instance map
is resampled by one nearest-neighbour gather (:mod:`nndet.preprocessing.resample`), and the
boxes, lost and split objects are derived from the stored map. ``documentation/
preprocessing.md`` describes the stored files and every property.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.normalization.default_normalization_schemes import (
    CTNormalization,
    ImageNormalization,
    ZScoreNormalization,
)
from tqdm import tqdm

from nndet.data.dataset import RawCase, image_dir, list_cases, read_case
from nndet.planning.plan import Normalization, Plan
from nndet.preprocessing.objects import collect_objects
from nndet.preprocessing.resample import (
    FAKE_SLICE_SPACING,
    new_shape,
    resample_images,
    resample_instance_map,
    target_spacing,
)
from nndet.preprocessing.storage import CaseStore

logger = logging.getLogger(__name__)

MAX_INSTANCE_ID = 32767  # instance maps are stored as int16, as nnU-Net stores segmentations


def normalizer(norm: Normalization) -> ImageNormalization:
    """nnU-Net's normaliser for one modality of the plan.

    ``use_mask_for_norm`` is off: z-scores use the whole (cropped) image.
    """
    if norm.scheme == "ct":
        props = {
            "mean": norm.mean,
            "std": norm.std,
            "percentile_00_5": norm.lower,
            "percentile_99_5": norm.upper,
        }
        if any(v is None for v in props.values()):
            raise ValueError(
                f"CT normalisation needs mean, std, lower and upper; the plan has {norm}"
            )
        return CTNormalization(use_mask_for_norm=False, intensityproperties=props)
    if norm.scheme == "zscore":
        return ZScoreNormalization(use_mask_for_norm=False, intensityproperties={})
    raise ValueError(f"unknown normalisation scheme {norm.scheme!r}: use 'ct' or 'zscore'")


def _check_inputs(case_id: str, images: np.ndarray, instance_map: Any, plan: Plan) -> None:
    data_dim = images.ndim - 1
    if data_dim != plan.data_dim or len(plan.transpose) != data_dim:
        raise ValueError(
            f"case {case_id}: {data_dim}D image [C, *spatial] {list(images.shape)} does not fit"
            f" plan {plan.name!r} for {plan.data_dim}D data: re-plan with `nndet_prep`"
        )
    if images.shape[0] != len(plan.normalization):
        raise ValueError(
            f"case {case_id}: {images.shape[0]} modalities, plan {plan.name!r} normalises"
            f" {len(plan.normalization)}"
        )
    if instance_map is not None:
        if instance_map.shape != images.shape[1:]:
            raise ValueError(
                f"case {case_id}: label shape {list(instance_map.shape)} differs from the image"
                f" shape {list(images.shape[1:])}"
            )
        if instance_map.size and instance_map.max() > MAX_INSTANCE_ID:
            raise ValueError(f"case {case_id}: instance ids must be at most {MAX_INSTANCE_ID}")


def _transform(
    case_id: str,
    images: np.ndarray,
    instance_map: np.ndarray | None,
    geometry: dict,
    plan: Plan,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """The array steps shared by training and inference.

    Returns:
        data: float32 [C, *stored]; seg: int [1, *stored] (instance ids, or only the 0/-1
        crop mask without labels); the cropped raw map [*raw_cropped] (None without labels);
        the geometry properties.
    """
    _check_inputs(case_id, images, instance_map, plan)
    data_dim = plan.data_dim
    images = images.astype(np.float32, copy=False)
    seg = None if instance_map is None else instance_map[None].astype(np.int32, copy=False)

    # nnU-Net's cropping and resampling want 3 spatial axes: a 2D case is one slice.
    if data_dim == 2:
        images = images[:, None]
        seg = None if seg is None else seg[:, None]
    data, seg, bbox = crop_to_nonzero(images, seg)  # seg: -1 outside the nonzero mask
    bbox = bbox[3 - data_dim :]
    raw_cropped = None if instance_map is None else (seg[0, 0] if data_dim == 2 else seg[0])

    # Transpose to the stored axis order.
    offset = 3 - data_dim
    axes = [0] + list(range(1, offset + 1)) + [t + offset + 1 for t in plan.transpose]
    data, seg = data.transpose(axes), seg.transpose(axes)
    spacing = [float(geometry["spacing"][t]) for t in plan.transpose]
    target = target_spacing(spacing, plan.spacing, plan.dim)
    cropped_shape = list(data.shape[offset + 1 :])
    shape = new_shape(cropped_shape, spacing, target)

    # Normalise before resampling, as nnU-Net does: the crop mask still fits the image.
    for c, norm in enumerate(plan.normalization):
        data[c] = normalizer(norm).run(data[c], seg[0])

    fake = [FAKE_SLICE_SPACING] * offset
    data = resample_images(data, [1] * offset + shape, fake + spacing, fake + target)
    seg = resample_instance_map(seg, [1] * offset + shape)
    if offset:
        data, seg = data[:, 0], seg[:, 0]

    props = {
        "original_geometry": {**geometry, "shape": [int(n) for n in images.shape[1 + offset :]]},
        "original_spacing": [float(s) for s in geometry["spacing"]],
        "crop_bbox": [[int(lo), int(hi)] for lo, hi in bbox],
        "transpose": [int(t) for t in plan.transpose],
        "shape_after_crop": cropped_shape,
        "shape_after_resample": shape,
        "target_spacing": target,
        "plan": plan.name,
    }
    return data, seg, raw_cropped, props


def preprocess_arrays(
    case_id: str,
    images: np.ndarray,
    instance_map: np.ndarray,
    instances: dict[int, int],
    geometry: dict,
    plan: Plan,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocess a labelled case given as arrays (see :func:`preprocess_case`).

    ``images`` (when float32) and ``instance_map`` (when int32) serve as scratch space and are
    changed in place, which spares a copy of each; pass copies to keep them.
    """
    data, seg, raw_cropped, props = _transform(case_id, images, instance_map, geometry, plan)
    objects = collect_objects(case_id, seg[0], instances, raw_cropped)
    props = {
        "case_id": case_id,
        "instances": {str(i): c for i, c in zip(objects.ids, objects.classes, strict=True)},
        "ids": objects.ids,
        "classes": objects.classes,
        "boxes": objects.boxes,
        **props,
        "lost_instances": objects.lost,
        "split_instances": sorted(objects.split),
        "object_locations": objects.locations,
    }
    return data, seg.astype(np.int16, copy=False), props


def preprocess_case(case: RawCase, plan: Plan) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read and preprocess one labelled raw case.

    Returns:
        data: float32 [C, *stored] normalised images along the stored axes.
        seg: int16 [1, *stored] instance map (0 background, raw ids, -1 outside the crop).
        properties: JSON-ready dict (``documentation/preprocessing.md``).

    Raises:
        ValueError: the case has no label map, or does not fit the plan.
    """
    images, instance_map, instances, geometry = read_case(case)
    if instance_map is None:
        raise ValueError(
            f"case {case.case_id} has no label map in labels{{Tr,Ts}}: add it, or predict the"
            " case with `nndet_predict` instead"
        )
    return preprocess_arrays(case.case_id, images, instance_map, instances, geometry, plan)


def preprocess_image_for_inference(
    images: np.ndarray, geometry: dict, plan: Plan, case_id: str = "image"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Preprocess new images for prediction, exactly as training cases were.

    Args:
        images: float [C, *spatial] in raw array order, one channel per modality.
        geometry: as :func:`nndet.data.io.read_image` returns it (``spacing`` in array order).
        plan: the plan the model was trained with.

    Returns:
        data: float32 [C, *stored]; properties with the geometry keys that
        :func:`nndet.preprocessing.geometry.boxes_to_original` needs.
    """
    images = np.array(images, dtype=np.float32)  # a copy: normalisation works in place
    data, _, _, props = _transform(case_id, images, None, geometry, plan)
    return np.ascontiguousarray(data), {"case_id": case_id, **props}


def default_num_processes(cases: list[RawCase]) -> int:
    """Worker processes that fit the machine: CPUs, at most 8, and the memory at hand.

    A worker holds about :data:`BYTES_PER_VOXEL` bytes per voxel and modality of its case
    beyond its imports (float64 copies and coordinate grids of nnU-Net's resampling).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    voxels = max((_voxels(case) * len(case.images) for case in cases[:50]), default=0)
    fit = _available_memory() // max(1, voxels * BYTES_PER_VOXEL)
    return int(max(1, min(cpus or 1, 8, fit)))


# ~100 measured by scripts/bench_preprocessing.py on Task104 (full size), with some margin
BYTES_PER_VOXEL = 120


def _voxels(case: RawCase) -> int:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(case.images[0]))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return 0
    return math.prod(reader.GetSize())


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _run_case(args: tuple[RawCase, Plan, str]) -> dict[str, Any]:
    """Worker: preprocess and store one case; returns its lost and split objects."""
    case, plan, folder = args
    try:
        data, seg, props = preprocess_case(case, plan)
        CaseStore(folder).save_case(case.case_id, data, seg, props, plan.patch_size)
    except Exception as err:
        raise RuntimeError(f"preprocessing case {case.case_id} failed: {err}") from err
    return _summary(props)


def _summary(props: dict[str, Any]) -> dict[str, Any]:
    return {
        "case_id": props["case_id"],
        "lost": props.get("lost_instances", []),
        "split": props.get("split_instances", []),
    }


def preprocess_dataset(
    task_dir: Path | str,
    plan: Plan,
    out_dir: Path | str | None = None,
    num_processes: int | None = None,
    overwrite: bool = False,
    split: str = "Tr",
    progress: bool = True,
) -> dict[str, Any]:
    """Preprocess every labelled case of a split into ``out_dir`` (a :class:`CaseStore`).

    Finished cases are skipped unless ``overwrite``; leftovers of an interrupted run are
    removed first, so a run can be resumed after a crash.

    Args:
        task_dir: the raw task folder ``TaskNNN_Name``.
        plan: the plan to preprocess for.
        out_dir: default ``task_dir/preprocessed/<plan.name>``.
        num_processes: worker processes; default :func:`default_num_processes`.
        overwrite: redo finished cases.
        split: ``"Tr"`` or ``"Ts"``.
        progress: show a progress bar.

    Returns:
        ``{"output", "cases", "preprocessed", "skipped", "lost", "split"}``: the folder, the
        number of cases, the ids done now and skipped, and ``{case_id: [instance ids]}`` of
        the objects that vanished or split, over all cases (skipped ones included).
    """
    cases = list_cases(task_dir, split, plan.num_modalities)
    if not cases:
        raise FileNotFoundError(
            f"no cases in {image_dir(task_dir, split)}: see documentation/data_format.md"
        )
    store = CaseStore(out_dir or Path(task_dir) / "preprocessed" / plan.name)
    removed = store.clean_tmp()
    if removed:
        logger.info("removed %d unfinished files in %s", len(removed), store.folder)
    finished = set(store.case_ids())
    todo = [c for c in cases if overwrite or c.case_id not in finished]
    skipped = [c.case_id for c in cases if c not in todo]
    workers = min(num_processes or default_num_processes(todo), max(1, len(todo)))
    logger.info(
        "preprocessing %d cases (%d done before) with %d processes into %s",
        len(todo),
        len(skipped),
        workers,
        store.folder,
    )

    jobs = [(case, plan, str(store.folder)) for case in todo]
    bar = tqdm(total=len(todo), desc=f"preprocessing {plan.name}", disable=not progress)
    summaries = [_summary(store.load_properties(case_id)) for case_id in skipped]
    if workers == 1:
        for job in jobs:
            summaries.append(_run_case(job))
            bar.update()
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for summary in pool.imap_unordered(_run_case, jobs):
                summaries.append(summary)
                bar.update()
    bar.close()
    return _report(store.folder, cases, todo, skipped, summaries)


def _report(
    folder: Path,
    cases: list[RawCase],
    todo: list[RawCase],
    skipped: list[str],
    summaries: list[dict[str, Any]],
) -> dict[str, Any]:
    summaries = sorted(summaries, key=lambda s: s["case_id"])
    report = {
        "output": str(folder),
        "cases": len(cases),
        "preprocessed": sorted(c.case_id for c in todo),
        "skipped": sorted(skipped),
        "lost": {s["case_id"]: s["lost"] for s in summaries if s["lost"]},
        "split": {s["case_id"]: s["split"] for s in summaries if s["split"]},
    }
    for kind in ("lost", "split"):
        if report[kind]:
            logger.warning("objects %s in preprocessing (case: ids): %s", kind, report[kind])
    return report
