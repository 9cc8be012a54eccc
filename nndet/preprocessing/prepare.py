"""``nndet_prep`` as a function: check, fingerprint, plan, split and preprocess one task."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from nndet import __version__
from nndet.data.check import check_raw_dataset, format_problems
from nndet.data.dataset import list_cases, load_dataset_json
from nndet.data.io import load_json, save_json
from nndet.planning.fingerprint import compute_fingerprint, load_fingerprint, save_fingerprint
from nndet.planning.plan import Plan, Plans, save_plans
from nndet.planning.planner import plan_experiment
from nndet.planning.splits import load_splits, make_splits, save_splits
from nndet.preprocessing.preprocess import preprocess_dataset

logger = logging.getLogger(__name__)

# The plan fields that change the stored cases; a change of any of them invalidates a plan's
# preprocessed folder (patch and batch size do not).
_STORAGE_FIELDS = ("dim", "data_dim", "spacing", "transpose", "normalization", "num_modalities")


class RawDataError(ValueError):
    """The raw data failed the checks; the message lists every problem."""


@dataclass
class PrepareReport:
    """What :func:`prepare_task` wrote."""

    task_dir: Path
    preprocessed_dir: Path
    plans: Plans | None = None
    num_cases: int = 0
    lost_or_split: list[str] = field(default_factory=list)


def prepare_task(
    task_dir: Path,
    target: str = "gpu",
    gpu_memory_gb: float = 8.0,
    num_processes: int | None = None,
    overwrite: bool = False,
    check_only: bool = False,
    plan_names: list[str] | None = None,
) -> PrepareReport:
    """Check the raw data of a task, then fingerprint, plan, split and preprocess it.

    Args:
        task_dir: ``<NNDET_DATA>/TaskNNN_Name``.
        target: ``"gpu"`` or ``"cpu"``, the budget the plans are made for.
        gpu_memory_gb: the GPU memory budget for ``target="gpu"``.
        num_processes: worker processes for fingerprint and preprocessing (None: fit the machine).
        overwrite: recompute the fingerprint and rewrite every preprocessed case.
        check_only: stop after the checks.
        plan_names: preprocess only these plans (default: all planned).

    Raises:
        RawDataError: the raw data have problems; nothing was written.
    """
    task_dir = Path(task_dir)
    out = task_dir / "preprocessed"
    report = PrepareReport(task_dir=task_dir, preprocessed_dir=out)

    logger.info("checking raw data in %s", task_dir)
    problems = check_raw_dataset(task_dir)
    if problems:
        raise RawDataError(format_problems(problems))
    if check_only:
        return report
    dataset_json = load_dataset_json(task_dir)

    fingerprint_path = out / "fingerprint.json"
    if fingerprint_path.is_file() and not overwrite:
        logger.info("reusing fingerprint %s", fingerprint_path)
        fingerprint = load_fingerprint(fingerprint_path)
    else:
        logger.info("computing the fingerprint")
        fingerprint = compute_fingerprint(task_dir, num_processes=num_processes)
        save_fingerprint(fingerprint, fingerprint_path)

    plans = plan_experiment(fingerprint, dataset_json, target=target, gpu_memory_gb=gpu_memory_gb)
    save_plans(plans, out / "plans.json")
    report.plans = plans
    logger.info("plans %s (default %s) -> %s", sorted(plans.plans), plans.default, out)

    case_ids = [c.case_id for c in list_cases(task_dir, "Tr")]
    splits_path = out / "splits.json"
    if not splits_path.is_file() or overwrite or _split_cases(splits_path) != set(case_ids):
        save_splits(make_splits(case_ids), splits_path)
    report.num_cases = len(case_ids)

    for name in plan_names or sorted(plans.plans):
        plan = plans.get(name)
        plan_dir = out / plan.name
        _invalidate_if_changed(plan, plan_dir, overwrite)
        result = preprocess_dataset(
            task_dir, plan, plan_dir, num_processes=num_processes, overwrite=overwrite
        )
        report.lost_or_split.extend(_describe_lost(result))
    return report


def _split_cases(path: Path) -> set[str]:
    return {case for fold in load_splits(path) for case in fold["train"] + fold["val"]}


def _storage_key(plan: Plan) -> dict:
    data = plan.to_dict()
    return {name: data[name] for name in _STORAGE_FIELDS}


def _invalidate_if_changed(plan: Plan, plan_dir: Path, overwrite: bool) -> None:
    """Remove a plan's stored cases when they were made with other storage settings."""
    marker = plan_dir / "storage.json"
    key = {"nndet_version": __version__, **_storage_key(plan)}
    if plan_dir.is_dir() and marker.is_file() and not overwrite:
        old = load_json(marker)
        old.pop("nndet_version", None)
        if old == _storage_key(plan):
            return
        logger.warning("plan %s changed how cases are stored: re-preprocessing", plan.name)
        shutil.rmtree(plan_dir)
    plan_dir.mkdir(parents=True, exist_ok=True)
    save_json(key, marker)


def _describe_lost(result: dict) -> list[str]:
    lines = []
    for case_id, ids in sorted(result.get("lost", {}).items()):
        lines.append(f"{case_id}: instances {ids} vanished in resampling")
    for case_id, ids in sorted(result.get("split", {}).items()):
        lines.append(f"{case_id}: instances {ids} were split into several parts")
    return lines
