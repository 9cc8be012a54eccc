"""Where nndet reads and writes: the data and model roots and task folder lookup."""

from __future__ import annotations

import os
import re
from pathlib import Path


def data_root() -> Path:
    """The folder holding ``TaskNNN_Name/`` datasets.

    ``NNDET_DATA`` wins over the nnDetection-style ``det_data``; the default is ``./nndet_data``.
    """
    return Path(os.environ.get("NNDET_DATA") or os.environ.get("det_data") or "nndet_data")


def models_root() -> Path:
    """The folder holding trained ``TaskNNN_Name/<model>_<plan>/`` folders.

    ``NNDET_MODELS`` wins over ``det_models``; the default is ``./nndet_models``.
    """
    return Path(os.environ.get("NNDET_MODELS") or os.environ.get("det_models") or "nndet_models")


def task_number(task: str | int) -> int:
    """Parse ``Task001``, ``Task001_Name``, ``001`` or ``1`` into the task number."""
    match = re.fullmatch(r"(?:Task)?0*(\d+)(?:_.*)?", str(task).strip(), flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"{task!r} is not a task name: use TaskNNN, TaskNNN_Name, NNN or N")
    return int(match.group(1))


def task_folder_name(root: Path, task: str | int) -> str:
    """The ``TaskNNN_Name`` folder under ``root`` that ``task`` names.

    Raises:
        FileNotFoundError: no folder of that number, naming the root that was searched.
    """
    number = task_number(task)
    candidates = sorted(p.name for p in Path(root).glob(f"Task{number:03d}_*") if p.is_dir())
    if not candidates:
        raise FileNotFoundError(
            f"no folder Task{number:03d}_* in {Path(root).resolve()}: set NNDET_DATA to the folder"
            f" that holds your tasks, or run `nndet_example` to write the example tasks"
        )
    if len(candidates) > 1:
        raise FileNotFoundError(f"several folders match Task{number:03d}: {candidates}")
    return candidates[0]


def task_dir(task: str | int, root: Path | None = None) -> Path:
    """The raw task folder ``<NNDET_DATA>/TaskNNN_Name``."""
    root = data_root() if root is None else Path(root)
    return root / task_folder_name(root, task)


def preprocessed_dir(task: str | int, root: Path | None = None) -> Path:
    """``<task>/preprocessed``: fingerprint, plans, splits and one folder of cases per plan."""
    return task_dir(task, root) / "preprocessed"
