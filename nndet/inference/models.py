"""Find a trained ``<model>_<plan>`` folder and load its fold ensemble for prediction.

A model folder (DESIGN.md, "Folders and files") is self-contained::

    <model>_<plan>/dataset.json            copy of the task's dataset.json
    <model>_<plan>/plan.json               {"nndet_version", "model", "plan": {...}}
    <model>_<plan>/fold<K>/checkpoint_final.pt   {"model": state dict, "model_name": ...}
    <model>_<plan>/inference_plan.json     the sweep's settings (optional)

so it can be copied to another machine and used without ``NNDET_DATA``. Checkpoints are
loaded with ``weights_only=True``: nothing is unpickled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from nndet.data.io import load_json
from nndet.data.paths import models_root, task_dir, task_folder_name, task_number
from nndet.inference.predictor import resolve_device
from nndet.inference.views import list_views
from nndet.model.detector import RetinaUNet
from nndet.planning.plan import Plan, load_plans

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "retina_unet"
CHECKPOINT = "checkpoint_final.pt"
VIEWS_DIR = "val_views"
PLAN_RECORD = "plan.json"


class LoadedModels(NamedTuple):
    """What prediction needs from a model folder (unpacks as a 4-tuple).

    Attributes:
        plan: the plan the folds were trained with.
        dataset_json: the task's ``dataset.json`` copied into the folder.
        models: one network per fold, in evaluation mode, on the device asked for; each
            knows its variant as ``.model``.
        folds: the fold number of each network.
    """

    plan: Plan
    dataset_json: dict[str, Any]
    models: list[RetinaUNet]
    folds: list[int]


def _task_name(task: str | int) -> str:
    return f"Task{task_number(task):03d}"


def trained_folds(model_dir: Path | str, needs: str = "checkpoint") -> list[int]:
    """Fold numbers of a model folder that are trained, sorted.

    Args:
        needs: what makes a fold count: ``"checkpoint"`` (a ``checkpoint_final.pt``, what
            prediction needs) or ``"views"`` (validation views, what the sweep needs).
    """
    folds = []
    for folder in Path(model_dir).glob("fold*"):
        number = folder.name[len("fold") :]
        if not number.isdigit():
            continue
        if needs == "views":
            trained = bool(list_views(folder / VIEWS_DIR))
        else:
            trained = (folder / CHECKPOINT).is_file()
        if trained:
            folds.append(int(number))
    return sorted(folds)


def model_identity(model_dir: Path | str) -> tuple[str, str]:
    """``(model, plan name)`` of a model folder, from its ``plan.json``.

    Without that file the folder name ``<model>_<plan>`` is split at the last underscore.
    """
    model_dir = Path(model_dir)
    record = model_dir / PLAN_RECORD
    if record.is_file():
        data = load_json(record)
        return str(data["model"]), str(data["plan"]["name"])
    model, _, plan = model_dir.name.rpartition("_")
    return model, plan


def default_plan_name(task: str | int) -> str | None:
    """The task's default plan from ``preprocessed/plans.json``, when the data are at hand."""
    try:
        return load_plans(task_dir(task) / "preprocessed" / "plans.json").default
    except (FileNotFoundError, ValueError, KeyError):
        return None


def resolve_model_dir(
    task: str | int, model: str | None = None, plan: str | None = None, needs: str = "checkpoint"
) -> Path:
    """The trained ``<model>_<plan>`` folder of ``task`` under ``NNDET_MODELS``.

    See :func:`find_model_dir`; ``needs`` says what makes a fold trained
    (:func:`trained_folds`).

    Raises:
        FileNotFoundError: the task has no model folder, or :func:`find_model_dir` fails.
    """
    name = _task_name(task)
    try:
        task_models = models_root() / task_folder_name(models_root(), task)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no trained model of {name} in {models_root().resolve()}: run "
            f"`nndet_train {name} -f 0` first (or set NNDET_MODELS to the folder that holds"
            " your models)"
        ) from None
    return find_model_dir(task_models, model, plan, default_plan_name(task), needs)


def find_model_dir(
    task_models: Path,
    model: str | None = None,
    plan: str | None = None,
    default_plan: str | None = None,
    needs: str = "checkpoint",
) -> Path:
    """The ``<model>_<plan>`` folder of ``<NNDET_MODELS>/TaskNNN_Name`` a command should use.

    A folder counts as trained when one of its folds is (:func:`trained_folds` with
    ``needs``). Named model and plan select their folder. Otherwise, among the trained folders
    that fit what was named, a single one is used; among several, the one of model
    ``retina_unet`` (or ``model``) and ``default_plan`` (or ``plan``).

    Raises:
        FileNotFoundError: no trained folder fits (naming ``nndet_train``), or several do
            and nothing decides between them (naming ``--model`` and ``--plan``).
    """
    name = task_models.name.split("_")[0]
    what = CHECKPOINT if needs == "checkpoint" else f"{VIEWS_DIR}/"
    if model is not None and plan is not None:
        folder = task_models / f"{model}_{plan}"
        if not trained_folds(folder, needs):
            raise FileNotFoundError(
                f"no fold of {folder} holds {what}: run "
                f"`nndet_train {name} -f 0 --model {model} --plan {plan}` first"
            )
        return folder

    folders = [p for p in sorted(task_models.glob("*_*")) if p.is_dir()]
    identities = {p: model_identity(p) for p in folders if trained_folds(p, needs)}
    fits = [
        p for p, (m, n) in identities.items()
        if (model is None or m == model) and (plan is None or n == plan)
    ]  # fmt: skip
    if len(fits) == 1:
        return fits[0]
    if not fits:
        named = " ".join(f"--{k} {v}" for k, v in (("model", model), ("plan", plan)) if v)
        raise FileNotFoundError(
            f"no trained model{' for ' + named if named else ''} in {task_models} "
            f"(no fold<K>/{what}): run `nndet_train {name} -f 0{' ' + named if named else ''}`"
            " first"
        )
    wanted = (model or DEFAULT_MODEL, plan or default_plan)
    for folder in fits:
        if identities[folder] == wanted:
            return folder
    raise FileNotFoundError(
        f"several trained models in {task_models} ({', '.join(p.name for p in fits)}): "
        "choose one with --model and --plan"
    )


def load_plan_record(model_dir: Path | str) -> tuple[Plan, str]:
    """The plan and the model variant recorded in ``model_dir/plan.json``."""
    path = Path(model_dir) / PLAN_RECORD
    if not path.is_file():
        raise FileNotFoundError(
            f"no {PLAN_RECORD} in {model_dir}: this is not a model folder written by "
            "nndet_train (it copies the plan there when a fold starts)"
        )
    record = load_json(path)
    return Plan.from_dict(record["plan"]), str(record.get("model", DEFAULT_MODEL))


def load_fold_model(
    path: Path | str, plan: Plan, model_name: str, device: torch.device
) -> RetinaUNet:
    """One fold's network from its checkpoint (weights only), in evaluation mode."""
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} holds no 'model' state dict: train the fold again")
    name = str(state.get("model_name", model_name))
    network = RetinaUNet.from_plan(plan, model=name)
    try:
        network.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(
            f"{path} does not fit the plan in {Path(path).parents[1] / PLAN_RECORD} ({err}): "
            "the folder mixes checkpoints of different plans; train the fold again"
        ) from err
    return network.to(device).eval()


def load_model_dir(
    model_dir: Path | str, folds: Sequence[int] | None = None, device: str = "auto"
) -> LoadedModels:
    """Load the plan, ``dataset.json`` and the fold ensemble of a model folder.

    Args:
        model_dir: a ``<model>_<plan>`` folder (under ``NNDET_MODELS`` or copied anywhere).
        folds: the folds to use (default: every fold with ``checkpoint_final.pt``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        :class:`LoadedModels`, which also unpacks as ``(plan, dataset_json, models, folds)``.

    Raises:
        FileNotFoundError: a missing record or checkpoint, naming the command that makes it.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} does not exist")
    plan, model_name = load_plan_record(model_dir)
    dataset_path = model_dir / "dataset.json"
    if not dataset_path.is_file():
        raise FileNotFoundError(
            f"no dataset.json in {model_dir}: copy the task's dataset.json there"
        )
    dataset_json = load_json(dataset_path)

    trained = trained_folds(model_dir)
    task = model_dir.parent.name.split("_")[0]
    if not trained:
        raise FileNotFoundError(
            f"no fold of {model_dir} holds {CHECKPOINT}: run `nndet_train {task} -f 0` first"
        )
    missing = sorted(set(folds or []) - set(trained))
    if missing:
        raise FileNotFoundError(
            f"{model_dir}/fold{missing[0]}/{CHECKPOINT} does not exist: run "
            f"`nndet_train {task} -f {missing[0]}`, or use the trained folds {trained}"
        )
    use = sorted(set(folds)) if folds else trained

    target = resolve_device(device)
    models = [
        load_fold_model(model_dir / f"fold{k}" / CHECKPOINT, plan, model_name, target) for k in use
    ]
    logger.info("loaded %s folds %s (plan %s) on %s", model_name, use, plan.name, target)
    return LoadedModels(plan, dataset_json, models, use)
