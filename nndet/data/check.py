"""Checking a raw task before anything is computed from it (the first step of ``nndet_prep``).

Every problem is collected, none raised, so that a user sees all of them at once; each names
its file and what to do. Tolerances for the geometry of a case (images against each other and
against the label):

- shape: equal;
- spacing: relative difference at most :data:`SPACING_RTOL` (NIfTI stores float32 headers);
- origin: at most :data:`ORIGIN_ATOL_VOXELS` of the smallest spacing (and never below 1e-3 mm);
- direction: cosines differ by at most :data:`DIRECTION_ATOL`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nndet.data.dataset import (
    REQUIRED_FIELDS,
    RawCase,
    image_dir,
    label_dir,
    list_cases,
    split_name,
)
from nndet.data.io import load_json, read_image

logger = logging.getLogger(__name__)

SPACING_RTOL = 1e-3
ORIGIN_ATOL_VOXELS = 1e-2  # a hundredth of a voxel: far below any misalignment that matters
DIRECTION_ATOL = 1e-3
MAX_INSTANCE_ID = 32767  # preprocessed instance maps are stored as int16 (blosc2)
DOC = "documentation/data_format.md"


@dataclass(frozen=True)
class Problem:
    """One problem of a raw task: the file it concerns and a message that says what to do."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class _Expected:
    """What ``dataset.json`` promises; None where it could not be read."""

    dim: int | None
    num_modalities: int | None
    classes: frozenset[int] | None
    test_labels: bool


def format_problems(problems: Iterable[Problem]) -> str:
    """A readable list of problems, one per line, with a count and a pointer to the docs."""
    problems = list(problems)
    if not problems:
        return "raw data check: no problems found"
    lines = [f"raw data check: {len(problems)} problem(s) found:"]
    lines += [f"  - {p}" for p in problems]
    lines.append(f"the raw layout and dataset.json fields are described in {DOC}")
    return "\n".join(lines)


def check_raw_dataset(
    task_dir: Path | str, splits: Iterable[str] = ("Tr", "Ts"), workers: int = 4
) -> list[Problem]:
    """Check a raw task and return every problem found (empty when the task is usable).

    Checks ``dataset.json`` (fields, types, ids), the files of every case (all modalities,
    labels for every training image and images for every label, valid case json), and the
    content of each case: image dimension against ``dim``, no NaN/inf, equal geometry of
    images and label (see the module docstring for tolerances), an integer instance map with
    ids below 32768 that equal the keys of the case json, and classes that ``dataset.json``
    lists. A split without an ``images`` folder is skipped, except training, which must exist.
    Labels of the test split are required when ``test_labels`` is true. Each image is read
    once; cases are checked in ``workers`` threads.
    """
    task_dir = Path(task_dir)
    expected, problems = check_dataset_json(task_dir)
    for split in splits:
        problems += _check_split(task_dir, split, expected, workers)
    return problems


def check_dataset_json(task_dir: Path) -> tuple[_Expected, list[Problem]]:
    """Problems of ``dataset.json``, and what it promises about the cases."""
    path = Path(task_dir) / "dataset.json"
    unknown = _Expected(None, None, None, False)
    if not path.is_file():
        fields = ", ".join(REQUIRED_FIELDS)
        return unknown, [Problem(path, f"missing: write it with the fields {fields} ({DOC})")]
    try:
        meta = load_json(path)
    except ValueError as err:
        return unknown, [Problem(path, f"not valid JSON ({err}): fix the syntax")]
    if not isinstance(meta, dict):
        return unknown, [Problem(path, "must hold a JSON object with the dataset's fields")]

    problems = [
        Problem(path, f"required field {f!r} is missing: add it ({DOC})")
        for f in REQUIRED_FIELDS
        if f not in meta
    ]
    dim = meta.get("dim")
    if "dim" in meta and (isinstance(dim, bool) or dim not in (2, 3)):
        problems.append(Problem(path, f"'dim' is {dim!r}: set it to 2 or 3"))
        dim = None
    modalities, msg = _id_map(meta.get("modalities"), "modalities", '{"0": "CT"}')
    classes, msg_labels = _id_map(meta.get("labels"), "labels", '{"0": "benign", "1": "malign"}')
    problems += [Problem(path, m) for m in (msg, msg_labels) if m and m != "missing"]
    for field in ("task", "name"):
        if field in meta and not isinstance(meta[field], str):
            problems.append(Problem(path, f"{field!r} must be a string, e.g. Task001_Name"))
    test_labels = meta.get("test_labels", False)
    if not isinstance(test_labels, bool):
        problems.append(Problem(path, f"'test_labels' is {test_labels!r}: use true or false"))
    target = meta.get("target_class")
    if target is not None and classes is not None and _as_int(target) not in classes:
        problems.append(Problem(path, f"'target_class' {target!r} is not a key of 'labels'"))

    num_modalities = None if modalities is None else len(modalities)
    expected = _Expected(dim, num_modalities, classes, test_labels is True)
    return expected, problems


def _as_int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _id_map(value: object, field: str, example: str) -> tuple[frozenset[int] | None, str | None]:
    """The ids of a ``{"0": name, "1": name}`` field, or a message why it is not one."""
    if value is None:
        return None, "missing"
    keys = [_as_int(k) for k in value] if isinstance(value, dict) else []
    if not keys or None in keys or sorted(keys) != list(range(len(keys))):
        return None, (
            f"{field!r} must map the ids 0, 1, ... (as strings, without gaps) to names,"
            f" e.g. {example}; found {value!r}"
        )
    if not all(isinstance(v, str) for v in value.values()):
        return None, f"{field!r} must map ids to names (strings), e.g. {example}"
    return frozenset(keys), None


def _check_split(task_dir: Path, split: str, expected: _Expected, workers: int) -> list[Problem]:
    """Folder-level problems of one split, then the content of every case."""
    images, labels = image_dir(task_dir, split), label_dir(task_dir, split)
    if not images.is_dir():
        if split != "Tr":
            return []
        return [Problem(images, "missing: put the training images here as CASE_0000.nii.gz")]

    problems = _check_names(images, labels, expected.num_modalities)
    cases = list_cases(task_dir, split, expected.num_modalities)
    if split == "Tr" and not cases:
        problems.append(Problem(images, "no images: add training cases as CASE_0000.nii.gz"))
    need_labels = split == "Tr" or expected.test_labels
    for case in cases:
        problems += _check_case_files(case, labels, need_labels)

    readable = [c for c in cases if all(p.is_file() for p in c.images)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for found in pool.map(lambda c: _check_case_content(c, expected), readable):
            problems += found
    return problems


def _check_names(images: Path, labels: Path, num_modalities: int | None) -> list[Problem]:
    """Files named outside the layout, modalities beyond dataset.json's, labels without image."""
    problems, case_ids = [], set()
    for path in sorted(p for p in images.iterdir() if not p.name.startswith(".")):
        stem = split_name(path.name)
        if path.is_file() and len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
            case_ids.add(stem[:-5])
            if num_modalities is not None and int(stem[-4:]) >= num_modalities:
                msg = f"modality {int(stem[-4:])}, but dataset.json lists {num_modalities}"
                problems.append(Problem(path, f"{msg}: add it to 'modalities' or remove the file"))
        else:
            msg = "not named CASE_XXXX.<ending> (XXXX the modality, e.g. _0000): rename or remove"
            problems.append(Problem(path, msg))
    if labels.is_dir():
        for path in sorted(p for p in labels.iterdir() if not p.name.startswith(".")):
            if split_name(path.name) not in case_ids:
                msg = f"label without image: add {images.name}/{split_name(path.name)}_0000.*"
                problems.append(Problem(path, msg + " or remove the label"))
    return problems


def _check_case_files(case: RawCase, labels: Path, need_labels: bool) -> list[Problem]:
    """Missing modality files, missing labels and an invalid case json."""
    problems = [
        Problem(p, f"missing modality {i} of case {case.case_id}: add it")
        for i, p in enumerate(case.images)
        if not p.is_file()
    ]
    if case.label is None and need_labels:
        msg = f"missing label of case {case.case_id}: add the instance map {case.case_id}.nii.gz"
        problems.append(Problem(labels / f"{case.case_id}.nii.gz", msg))
    if case.label is not None and case.label_json is None:
        msg = 'missing: write {"instances": {"1": <class>, ...}} for the ids of the label'
        problems.append(Problem(labels / f"{case.case_id}.json", msg))
    if case.label_json is not None:
        problems += _check_case_json(case.label_json)
    return problems


def _check_case_json(path: Path) -> list[Problem]:
    _, message = _load_case_json(path)
    return [] if message is None else [Problem(path, message)]


def _load_case_json(path: Path) -> tuple[dict[int, int] | None, str | None]:
    """``{instance id: class}`` of a case json, or None and the message why it is invalid."""
    try:
        data = load_json(path)
    except ValueError as err:
        return None, f"not valid JSON ({err}): fix the syntax"
    instances = data.get("instances") if isinstance(data, dict) else None
    ok = isinstance(instances, dict) and all(
        _as_int(k) is not None and isinstance(v, int) and not isinstance(v, bool)
        for k, v in instances.items()
    )
    if not ok:
        msg = 'must be {"instances": {"<instance id>": <class id>, ...}} with integer ids'
        return None, msg + ' ({"instances": {}} for a case without objects)'
    return {int(k): v for k, v in instances.items()}, None


def _read(path: Path, what: str) -> tuple[np.ndarray | None, dict | None, list[Problem]]:
    try:
        array, geometry = read_image(path)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = f"SimpleITK cannot read this {what} ({first}): convert it to NIfTI (.nii.gz)"
        return None, None, [Problem(path, msg)]
    return array, geometry, []


def _check_case_content(case: RawCase, expected: _Expected) -> list[Problem]:
    """Dimension, finiteness and geometry of every image; the label against its images."""
    problems, reference = [], None
    for path in case.images:
        array, geometry, found = _read(path, "image")
        problems += found
        if array is None:
            continue
        if expected.dim is not None and array.ndim != expected.dim:
            msg = f"image is {array.ndim}D {tuple(array.shape)} but dataset.json says dim"
            problems.append(Problem(path, f"{msg} {expected.dim}: fix the image or 'dim'"))
        if not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            problems.append(Problem(path, f"{bad} voxels are NaN or inf: replace them"))
        if reference is None:
            reference = (path, geometry)
        elif mismatch := geometry_mismatch(reference[1], geometry):
            problems.append(Problem(path, f"{mismatch} than {reference[0].name}: resample it"))

    if case.label is None:
        return problems
    label, geometry, found = _read(case.label, "label")
    problems += found
    if label is None:
        return problems
    if reference is not None and (mismatch := geometry_mismatch(reference[1], geometry)):
        msg = f"{mismatch} than its image {reference[0].name}: resample the label to the image"
        problems.append(Problem(case.label, f"{msg} (nearest neighbour)"))
    return problems + _check_instances(case, label, expected)


def geometry_mismatch(a: dict, b: dict) -> str | None:
    """How geometry ``b`` differs from ``a`` (as :func:`nndet.data.io.read_image` returns
    them), within the module's tolerances; None when they agree."""
    if list(a["shape"]) != list(b["shape"]):
        return f"other shape {tuple(b['shape'])} vs {tuple(a['shape'])}"
    spacing_a, spacing_b = np.asarray(a["spacing"]), np.asarray(b["spacing"])
    if not np.allclose(spacing_a, spacing_b, rtol=SPACING_RTOL, atol=0):
        return f"other spacing {_fmt(spacing_b)} vs {_fmt(spacing_a)}"
    origin_tol = max(1e-3, ORIGIN_ATOL_VOXELS * float(spacing_a.min()))
    if not np.allclose(a["origin"], b["origin"], rtol=0, atol=origin_tol):
        return f"other origin {_fmt(b['origin'])} vs {_fmt(a['origin'])}"
    if not np.allclose(a["direction"], b["direction"], rtol=0, atol=DIRECTION_ATOL):
        return f"other direction {_fmt(b['direction'])} vs {_fmt(a['direction'])}"
    return None


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _check_instances(case: RawCase, label: np.ndarray, expected: _Expected) -> list[Problem]:
    """Integer, non-negative ids below 32768 that equal the case json's keys and known classes."""
    path = case.label
    if not np.isfinite(label).all() or (label != np.round(label)).any():
        return [Problem(path, "instance map holds non-integer values: store integer ids")]
    if label.min() < 0:
        return [Problem(path, "instance map holds negative ids: use 0 for background, 1..N")]
    if label.max() > MAX_INSTANCE_ID:
        msg = f"instance id {int(label.max())} exceeds {MAX_INSTANCE_ID}: renumber the objects"
        return [Problem(path, msg + " 1..N")]
    if case.label_json is None:
        return []
    instances, _ = _load_case_json(case.label_json)
    if instances is None:
        return []  # reported by the case json check

    problems = []
    in_map = set(np.unique(label).astype(int).tolist()) - {0}
    if only_map := sorted(in_map - set(instances)):
        msg = f"ids {only_map} of {path.name} have no class here: add them to 'instances'"
        problems.append(Problem(case.label_json, msg))
    if only_json := sorted(set(instances) - in_map):
        msg = f"ids {only_json} are not in {path.name}: remove them or fix the instance map"
        problems.append(Problem(case.label_json, msg))
    if expected.classes is not None:
        unknown = sorted({c for c in instances.values()} - expected.classes)
        if unknown:
            msg = f"classes {unknown} are not keys of 'labels' in dataset.json: fix the classes"
            problems.append(Problem(case.label_json, msg + " or add them to 'labels'"))
    return problems
