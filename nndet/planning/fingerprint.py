"""The dataset fingerprint: what the planner needs to know about a raw task, as JSON.

Written to ``preprocessed/fingerprint.json`` by :func:`compute_fingerprint` and read back with
:func:`load_fingerprint`. Every field is explained in ``documentation/planning.md``. Per case it
holds the spacing, the shape before and after cropping to the nonzero region, the foreground
intensity statistics per modality and every object's class and box size (voxels and mm); for
the dataset it pools these into per-class object statistics and per-modality intensity
statistics. All spatial lists follow the raw array axes (axis 0 is the slice axis in 3D).
"""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
    DatasetFingerprintExtractor,
)
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

import nndet
from nndet.data.dataset import RawCase, list_cases, load_dataset_json, read_case
from nndet.data.instances import instance_boxes
from nndet.data.io import load_json, save_json

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
# Foreground voxels sampled per case and modality for the pooled intensity statistics, as
# nnU-Net does (10,000 samples per case, with replacement).
NUM_INTENSITY_SAMPLES = 10_000
SIZE_PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


def _case_and_samples(case: RawCase, num_samples: int) -> tuple[dict, list[np.ndarray]]:
    """The fingerprint of one case and its foreground intensity samples per modality."""
    images, instance_map, instances, geometry = read_case(case)
    spatial = images.shape[1:]
    if instance_map is None:
        raise ValueError(
            f"case {case.case_id} has no label file in labelsTr: every training case needs one"
        )
    if instance_map.shape != spatial:
        raise ValueError(
            f"case {case.case_id}: label shape {list(instance_map.shape)} differs from image shape"
            f" {list(spatial)}: fix the files in raw_splitted"
        )

    # nnU-Net's own cropping and intensity sampling; both want a leading channel axis and
    # 3 spatial axes, so 2D cases get a singleton slice axis, removed again afterwards.
    flat = len(spatial) == 2
    seg = instance_map[None, None] if flat else instance_map[None]
    cropped, seg_cropped, bbox = crop_to_nonzero(images[:, None] if flat else images, seg.copy())
    shape_after_crop = list(cropped.shape[2:] if flat else cropped.shape[1:])
    bbox = bbox[1:] if flat else bbox
    samples, stats = DatasetFingerprintExtractor.collect_foreground_intensities(
        seg_cropped, cropped, num_samples=num_samples
    )

    spacing = [float(s) for s in geometry["spacing"]]
    objects = []
    for instance_id, box in instance_boxes(instance_map).items():
        if instance_id not in instances:
            logger.warning(
                "case %s: instance %d has no class in its json", case.case_id, instance_id
            )
            continue
        dim = len(box) // 2
        size = [box[dim + d] - box[d] for d in range(dim)]
        objects.append(
            {
                "id": instance_id,
                "class": instances[instance_id],
                "box": box,
                "size_voxels": size,
                "size_mm": [s * sp for s, sp in zip(size, spacing, strict=True)],
            }
        )

    info = {
        "spacing": spacing,
        "shape": list(spatial),
        "shape_after_crop": shape_after_crop,
        "crop_bbox": [[int(lo), int(hi)] for lo, hi in bbox],
        "intensity_stats": [{k: _finite(v) for k, v in s.items()} for s in stats],
        "objects": objects,
    }
    return info, [np.asarray(s, dtype=np.float32) for s in samples]


def _finite(value: float) -> float | None:
    """JSON has no NaN: statistics of a case without foreground become null."""
    value = float(value)
    return value if np.isfinite(value) else None


def fingerprint_case(case: RawCase, num_samples: int = NUM_INTENSITY_SAMPLES) -> dict:
    """The fingerprint entry of one raw training case.

    Returns:
        ``spacing``, ``shape``, ``shape_after_crop`` (D entries, raw array axes),
        ``crop_bbox`` ([D][2], the nonzero region), ``intensity_stats`` (per modality:
        mean, median, min, max, percentile_00_5, percentile_99_5 of the object voxels, null
        without objects) and ``objects`` (id, class, box, size_voxels, size_mm).
    """
    return _case_and_samples(case, num_samples)[0]


def _work(args: tuple[RawCase, int]) -> tuple[dict, list[np.ndarray]]:
    return _case_and_samples(*args)


def compute_fingerprint(
    task_dir: Path | str, num_processes: int = 2, num_samples: int = NUM_INTENSITY_SAMPLES
) -> dict:
    """Fingerprint every training case of a raw task and pool the statistics.

    Args:
        task_dir: the raw task folder (holding ``dataset.json`` and ``raw_splitted``).
        num_processes: worker processes (fork); 1 works in this process.
        num_samples: foreground intensity samples per case and modality.

    Returns:
        The fingerprint dict described in ``documentation/planning.md``.
    """
    task_dir = Path(task_dir)
    dataset_json = load_dataset_json(task_dir)
    num_modalities = len(dataset_json["modalities"])
    cases = list_cases(task_dir, "Tr", num_modalities=num_modalities)
    if not cases:
        raise FileNotFoundError(f"no training cases in {task_dir / 'raw_splitted' / 'imagesTr'}")

    jobs = [(case, num_samples) for case in cases]
    if num_processes > 1 and len(cases) > 1:
        # fork keeps start-up cheap (no torch re-import per worker, unlike spawn).
        with multiprocessing.get_context("fork").Pool(min(num_processes, len(cases))) as pool:
            results = pool.map(_work, jobs, chunksize=1)
    else:
        results = [_work(job) for job in jobs]

    per_case = {case.case_id: info for case, (info, _) in zip(cases, results, strict=True)}
    samples = [np.concatenate([r[1][m] for r in results]) for m in range(num_modalities)]
    return summarize(per_case, samples, dataset_json)


def summarize(per_case: dict[str, dict], samples: list[np.ndarray], dataset_json: dict) -> dict:
    """Pool per-case fingerprints into the dataset fingerprint.

    Args:
        per_case: ``{case_id: fingerprint_case(...)}``.
        samples: per modality, float [S] foreground intensities pooled over cases.
        dataset_json: the task's ``dataset.json``.
    """
    spacings = np.array([c["spacing"] for c in per_case.values()], dtype=np.float64)
    shapes = np.array([c["shape_after_crop"] for c in per_case.values()], dtype=np.float64)
    counts = [len(c["objects"]) for c in per_case.values()]
    return {
        "nndet_version": nndet.__version__,
        "dim": int(dataset_json["dim"]),
        "num_cases": len(per_case),
        "modalities": dict(dataset_json["modalities"]),
        "labels": dict(dataset_json["labels"]),
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "median_shape_after_crop": np.median(shapes, axis=0).tolist(),
        "intensity": [_intensity_stats(s) for s in samples],
        "classes": _class_stats(per_case, dataset_json["labels"]),
        "num_objects": int(sum(counts)),
        "objects_per_case": {
            "mean": float(np.mean(counts)),
            "median": float(np.median(counts)),
            "min": int(min(counts)),
            "max": int(max(counts)),
        },
        "cases_without_objects": sorted(k for k, c in per_case.items() if not c["objects"]),
        "cases": per_case,
    }


def _intensity_stats(samples: np.ndarray) -> dict[str, float | None]:
    """Statistics of one modality's pooled foreground samples (null without foreground)."""
    if samples.size == 0:
        keys = ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")
        return dict.fromkeys(keys)
    lo, median, hi = np.percentile(samples, (0.5, 50.0, 99.5))
    return {
        "mean": float(samples.mean()),
        "std": float(samples.std()),
        "median": float(median),
        "min": float(samples.min()),
        "max": float(samples.max()),
        "percentile_00_5": float(lo),
        "percentile_99_5": float(hi),
    }


def _class_stats(per_case: dict[str, dict], labels: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per class id: name, object count, cases holding it, size percentiles in voxels and mm."""
    stats = {}
    for class_id, name in sorted(labels.items(), key=lambda kv: int(kv[0])):
        objs = [o for c in per_case.values() for o in c["objects"] if o["class"] == int(class_id)]
        entry: dict[str, Any] = {
            "name": name,
            "num_objects": len(objs),
            "num_cases": sum(
                any(o["class"] == int(class_id) for o in c["objects"]) for c in per_case.values()
            ),
        }
        for key in ("size_voxels", "size_mm"):
            if objs:
                sizes = np.array([o[key] for o in objs], dtype=np.float64)
                values = np.percentile(sizes, SIZE_PERCENTILES, axis=0)
                entry[f"{key}_percentiles"] = {
                    f"p{p}": v.tolist() for p, v in zip(SIZE_PERCENTILES, values, strict=True)
                }
            else:
                entry[f"{key}_percentiles"] = None
        stats[class_id] = entry
    return stats


def save_fingerprint(fingerprint: dict, path: Path | str) -> None:
    """Write ``fingerprint.json`` atomically."""
    save_json(fingerprint, path)


def load_fingerprint(path: Path | str) -> dict:
    """Read ``fingerprint.json``; a missing file names the command that writes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no fingerprint at {path}: run `nndet_prep <task>` first")
    return load_json(path)
