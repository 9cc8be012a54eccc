"""Predict every case of a folder of new images with a model folder's fold ensemble.

For each case: read its images, preprocess them as the training cases were, run the folds
with sliding windows (and mirroring), consolidate with the settings the sweep chose, map
the boxes back to the input image and write ``OUT/CASE_boxes.json`` (DESIGN.md,
"Prediction output"); at the end ``OUT/predictions.csv`` lists every box of every case.
Optional pictures and instance maps come from :mod:`nndet.inference.overlays`.

Input naming: ``CASE_0000.ext``, ``CASE_0001.ext`` ... one file per modality, as in
``imagesTr``; a single-modality model also takes any file names (the case id is the file
name without its ending, and without ``_0000`` where it has one).

A case whose JSON already exists is skipped (``overwrite`` predicts it again), so a killed
run picks up where it stopped. A case that cannot be read or does not fit the plan is
recorded in the report and the others go on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nndet.data.dataset import split_name
from nndet.data.io import read_image
from nndet.data.predictions import (
    prediction_path,
    read_case_prediction,
    write_predictions_csv,
)
from nndet.inference.consolidate import InferenceSettings
from nndet.inference.models import load_model_dir
from nndet.inference.overlays import overlays_missing, write_overlays
from nndet.inference.predictor import Predictor, predict_case
from nndet.inference.sweep import load_inference_settings
from nndet.inference.validation import write_case
from nndet.planning.plan import Plan
from nndet.preprocessing.preprocess import preprocess_image_for_inference

logger = logging.getLogger(__name__)

Progress = Callable[[Iterable, int], Iterable]  # (items, count) -> the same items
_MODALITY = re.compile(r"^(?P<case>.+)_(?P<mod>\d{4})$")
# Files that sit beside images but are never images: listing them as cases would only
# produce read errors.
_NOT_IMAGES = (".json", ".csv", ".txt", ".md", ".pkl", ".pt", ".py", ".log")


@dataclass
class PredictReport:
    """What :func:`predict_folder` did.

    Attributes:
        out_dir: the prediction folder.
        predicted: cases predicted in this run.
        skipped: cases whose ``CASE_boxes.json`` already existed.
        failed: ``{case id: why}`` for cases that could not be predicted.
        csv: ``predictions.csv``, or None when no case has a prediction.
        folds: the folds of the ensemble.
        score_threshold: the operating point written to every file (None before a sweep).
    """

    out_dir: Path
    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    csv: Path | None = None
    folds: list[int] = field(default_factory=list)
    score_threshold: float | None = None


def _input_files(in_dir: Path) -> list[Path]:
    if not in_dir.is_dir():
        raise FileNotFoundError(f"input folder {in_dir} does not exist")
    return [
        p
        for p in sorted(in_dir.iterdir())
        if p.is_file() and not p.name.startswith(".") and not p.name.lower().endswith(_NOT_IMAGES)
    ]


def find_input_cases(in_dir: Path | str, num_modalities: int) -> list[tuple[str, list[Path]]]:
    """The cases of an input folder and their image files, in modality order, by case id.

    Args:
        in_dir: folder of images.
        num_modalities: modalities the model takes.

    Returns:
        ``[(case id, [path per modality])]``. With several modalities a missing modality is
        listed under the name it should have, so that reading it fails for that case only.

    Raises:
        FileNotFoundError: the folder does not exist or holds no case.
        ValueError: two files give the same case id (e.g. ``a.png`` and ``a.nii.gz``).
    """
    in_dir = Path(in_dir)
    files = _input_files(in_dir)
    by_case: dict[str, dict[int, Path]] = {}
    for path in files:
        stem = split_name(path.name)
        match = _MODALITY.match(stem)
        if num_modalities == 1:
            # any name is a case; a _0000 ending is the modality, not part of the id
            key = match["case"] if match and match["mod"] == "0000" else stem
            modality = 0
        elif match:
            key, modality = match["case"], int(match["mod"])
        else:
            logger.warning(
                "ignoring %s: a %d-modality model needs files named CASE_0000 ... CASE_%04d",
                path, num_modalities, num_modalities - 1,
            )  # fmt: skip
            continue
        taken = by_case.setdefault(key, {})
        if modality in taken:
            raise ValueError(
                f"{taken[modality].name} and {path.name} in {in_dir} are both case {key!r}"
                f"{f' modality {modality}' if num_modalities > 1 else ''}: rename one"
            )
        taken[modality] = path

    if not by_case:
        raise FileNotFoundError(
            f"no images in {in_dir}"
            + (f" named CASE_0000 ... CASE_{num_modalities - 1:04d}" if num_modalities > 1 else "")
        )
    cases = []
    for case_id, mods in sorted(by_case.items()):
        first = mods[min(mods)]
        ending = first.name[len(split_name(first.name)) :]
        paths = [mods.get(m, in_dir / f"{case_id}_{m:04d}{ending}") for m in range(num_modalities)]
        cases.append((case_id, paths))
    return cases


def read_input_case(case_id: str, paths: Sequence[Path]) -> tuple[np.ndarray, dict]:
    """Images float32 [C, *spatial] and the geometry of the first modality.

    Raises:
        FileNotFoundError: a modality file is missing.
        ValueError: the modalities differ in shape.
        RuntimeError: SimpleITK cannot read a file.
    """
    arrays, geometry = [], None
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"case {case_id}: {path.name} is missing")
        array, geo = read_image(path)
        if geometry is not None and geo["shape"] != geometry["shape"]:
            raise ValueError(
                f"case {case_id}: {path.name} has shape {geo['shape']}, the first modality "
                f"{geometry['shape']}: all modalities must share one grid"
            )
        arrays.append(array.astype(np.float32, copy=False))
        geometry = geometry or geo
    return np.stack(arrays), geometry


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    # SimpleITK's messages put the useful line last, after the C++ source location
    useful = [line for line in text if line.strip()]
    return f"{type(err).__name__}: {useful[-1] if useful else ''}"


def predict_images(
    out_dir: Path | str,
    case_id: str,
    images: np.ndarray,
    geometry: dict,
    models: Sequence[Predictor],
    plan: Plan,
    settings: InferenceSettings,
    class_names: Mapping[int, str] | None,
    score_threshold: float | None,
    mirror: bool = True,
    device: str = "auto",
) -> Path:
    """Preprocess, predict and write one case given as arrays; returns its JSON's path.

    Args:
        out_dir: the prediction folder.
        case_id: the case's name.
        images: float [C, *spatial] in raw array order, one channel per modality.
        geometry: of the images, as :func:`nndet.data.io.read_image` returns it.
        models: the ensemble (see :mod:`nndet.inference.predictor`).
        plan: the plan the models were trained with.
        settings: consolidation settings; ``use_mirror=False`` also skips flipped tiles.
        class_names: ``{class id: name}`` for the file.
        score_threshold: the operating point written to the file.
        mirror: test-time mirroring.
        device: where the networks run.
    """
    data, properties = preprocess_image_for_inference(images, geometry, plan, case_id)
    result = predict_case(
        models, data, properties, plan, settings, case_id=case_id,
        mirror=mirror and settings.use_mirror, device=device,
    )  # fmt: skip
    prediction = (result.boxes, result.scores, result.labels)
    return write_case(out_dir, case_id, prediction, properties, class_names, score_threshold)


def predict_folder(
    model_dir: Path | str,
    in_dir: Path | str,
    out_dir: Path | str,
    folds: Sequence[int] | None = None,
    mirror: bool = True,
    device: str = "auto",
    png: bool = False,
    nifti: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> PredictReport:
    """Predict every case of ``in_dir`` into ``out_dir``.

    Args:
        model_dir: a trained ``<model>_<plan>`` folder (see :mod:`nndet.inference.models`).
        in_dir: images named as described in the module docstring.
        out_dir: where ``CASE_boxes.json`` and ``predictions.csv`` go.
        folds: the folds of the ensemble (default: every trained fold).
        mirror: test-time mirroring (also off when the sweep found it does not help).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        png: draw the boxes at or above the operating point (``OUT/png/``).
        nifti: write the boxes as an instance map on the input grid (``OUT/nifti/``).
        overwrite: predict cases again whose JSON exists.
        progress: wraps the loop over cases (tqdm in the command).

    Returns:
        A :class:`PredictReport`; failed cases are listed there, not raised.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    plan, dataset_json, models, used_folds = load_model_dir(model_dir, folds, device)
    settings, threshold = load_inference_settings(model_dir)
    class_names = {int(k): str(v) for k, v in dataset_json.get("labels", {}).items()}
    cases = find_input_cases(in_dir, plan.num_modalities)
    report = PredictReport(out_dir, folds=used_folds, score_threshold=threshold)
    logger.info("%d cases in %s -> %s", len(cases), in_dir, out_dir)

    for case_id, paths in progress(cases, len(cases)) if progress else cases:
        done = prediction_path(out_dir, case_id).is_file() and not overwrite
        try:
            if done:
                # pictures asked for now of a case predicted before come from its JSON
                if overlays_missing(out_dir, case_id, png, nifti):
                    images, _ = read_input_case(case_id, paths)
                    record = read_case_prediction(prediction_path(out_dir, case_id))
                    write_overlays(out_dir, record, images[0], png, nifti)
                report.skipped.append(case_id)
                continue
            images, geometry = read_input_case(case_id, paths)
            path = predict_images(
                out_dir, case_id, images, geometry, models, plan, settings, class_names,
                threshold, mirror=mirror, device=device,
            )  # fmt: skip
            if png or nifti:
                write_overlays(out_dir, read_case_prediction(path), images[0], png, nifti)
            report.predicted.append(case_id)
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            # one unreadable or unfitting case must not cost the others
            if isinstance(err, torch.cuda.OutOfMemoryError):
                raise
            logger.warning("case %s failed: %s", case_id, _describe(err))
            report.failed[case_id] = _describe(err)

    records = [
        read_case_prediction(prediction_path(out_dir, case_id))
        for case_id, _ in cases
        if prediction_path(out_dir, case_id).is_file()
    ]
    if records:
        report.csv = write_predictions_csv(out_dir, records)
    return report
