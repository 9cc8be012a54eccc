"""Finding a task's trained ``<model>_<plan>`` folder and what it holds.

A model folder (``<NNDET_MODELS>/TaskNNN_Name/<model>_<plan>``) holds one ``fold<K>`` folder
per trained fold and copies of ``dataset.json`` and ``plan.json`` written by training.
"""

from __future__ import annotations

from pathlib import Path

from nndet.data.io import load_json
from nndet.inference.views import list_views

VIEWS_DIR = "val_views"


def trained_folds(model_dir: Path | str) -> list[int]:
    """Folds of a ``<model>_<plan>`` folder that hold at least one validation views file."""
    folds = []
    for folder in Path(model_dir).glob("fold*"):
        number = folder.name[len("fold") :]
        if number.isdigit() and list_views(folder / VIEWS_DIR):
            folds.append(int(number))
    return sorted(folds)


def model_identity(model_dir: Path | str) -> tuple[str, str]:
    """``(model, plan name)`` of a model folder, from the ``plan.json`` training copied there.

    Without that file the folder name ``<model>_<plan>`` is split at its last underscore.
    """
    model_dir = Path(model_dir)
    record = model_dir / "plan.json"
    if record.is_file():
        data = load_json(record)
        return str(data["model"]), str(data["plan"]["name"])
    model, _, plan = model_dir.name.rpartition("_")
    return model, plan


def find_model_dir(
    task_models: Path | str, model: str | None = None, plan: str | None = None,
    default_plan: str | None = None,
) -> Path:  # fmt: skip
    """The ``<model>_<plan>`` folder of a task's model folder that a command should use.

    Named model and plan give their folder. Otherwise the trained folders (those with
    validation views) that fit what was named are the candidates: a single one is used;
    among several, the default model ``retina_unet`` with ``default_plan`` is.

    Args:
        task_models: ``<NNDET_MODELS>/TaskNNN_Name``.
        model, plan: what the user named, if anything.
        default_plan: the task's default plan (from ``plans.json``), when known.

    Raises:
        FileNotFoundError: no trained folder fits, naming the command that trains one.
    """
    task_models = Path(task_models)
    train = f"nndet_train {task_models.name.split('_')[0]} -f 0"
    if model is not None and plan is not None:
        return task_models / f"{model}_{plan}"
    folders = sorted(p for p in task_models.glob("*_*") if p.is_dir() and trained_folds(p))
    identities = {p: model_identity(p) for p in folders}
    fits = [
        p for p, (m, n) in identities.items()
        if (model is None or m == model) and (plan is None or n == plan)
    ]  # fmt: skip
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise FileNotFoundError(
            f"no trained fold with validation views in {task_models}: run `{train}` first"
        )
    wanted = (model or "retina_unet", plan or default_plan)
    for folder in fits:
        if identities[folder] == wanted:
            return folder
    raise FileNotFoundError(
        f"several trained models in {task_models} ({', '.join(p.name for p in fits)}): "
        "choose one with --model and --plan"
    )
