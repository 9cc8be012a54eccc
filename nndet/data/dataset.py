"""Reading a raw task in nnDetection's layout (``documentation/data_format.md``).

```
TaskNNN_Name/dataset.json
TaskNNN_Name/raw_splitted/imagesTr/CASE_0000.nii.gz   # one file per modality
TaskNNN_Name/raw_splitted/labelsTr/CASE.nii.gz        # instance map
TaskNNN_Name/raw_splitted/labelsTr/CASE.json          # {"instances": {"1": 0}}
```
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nndet.data.io import load_json, read_image

REQUIRED_FIELDS = ("task", "name", "dim", "modalities", "labels")
_MODALITY_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<mod>\d{4})$")


def split_name(name: str) -> str:
    """Strip every known image ending (``.nii.gz``, ``.nrrd``, ``.png`` ...) from a file name."""
    for ending in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff", ".bmp"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem


def load_dataset_json(task_dir: Path | str) -> dict:
    """``dataset.json`` of a task; a missing file names where it was expected."""
    path = Path(task_dir) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no dataset.json in {Path(task_dir)}: see documentation/data_format.md"
        )
    return load_json(path)


@dataclass(frozen=True)
class RawCase:
    """Files of one raw case: an image per modality and, when labelled, the label files."""

    case_id: str
    images: list[Path]  # in modality order _0000, _0001, ...
    label: Path | None  # instance map
    label_json: Path | None  # {"instances": {id: class}}


def image_dir(task_dir: Path | str, split: str = "Tr") -> Path:
    return Path(task_dir) / "raw_splitted" / f"images{split}"


def label_dir(task_dir: Path | str, split: str = "Tr") -> Path:
    return Path(task_dir) / "raw_splitted" / f"labels{split}"


def list_cases(
    task_dir: Path | str, split: str = "Tr", num_modalities: int | None = None
) -> list[RawCase]:
    """All cases of a split (``"Tr"`` or ``"Ts"``), sorted by id.

    A case is any id with at least one ``CASE_XXXX`` image; missing modality files are listed
    as they would be named, so that :mod:`nndet.data.check` can report them.
    """
    images = image_dir(task_dir, split)
    labels = label_dir(task_dir, split)
    by_case: dict[str, dict[int, Path]] = {}
    for path in sorted(images.glob("*")) if images.is_dir() else []:
        match = _MODALITY_SUFFIX.match(split_name(path.name))
        # hidden files are temporaries of atomic writes or system files, never cases
        if match and path.is_file() and not path.name.startswith("."):
            by_case.setdefault(match["case"], {})[int(match["mod"])] = path
    cases = []
    for case_id, mods in sorted(by_case.items()):
        count = num_modalities if num_modalities is not None else max(mods) + 1
        ending = mods[min(mods)].name[len(split_name(mods[min(mods)].name)) :]
        files = [mods.get(m, images / f"{case_id}_{m:04d}{ending}") for m in range(count)]
        label = _find_label(labels, case_id)
        label_json = labels / f"{case_id}.json"
        cases.append(RawCase(case_id, files, label, label_json if label_json.is_file() else None))
    return cases


def _find_label(labels: Path, case_id: str) -> Path | None:
    if not labels.is_dir():
        return None
    for path in sorted(labels.glob(f"{glob.escape(case_id)}.*")):
        if path.suffix != ".json" and split_name(path.name) == case_id:
            return path
    return None


def read_instances(label_json: Path | str) -> dict[int, int]:
    """``{instance id: class id}`` from a case json ``{"instances": {"1": 0}}``."""
    data = load_json(label_json)
    return {int(k): int(v) for k, v in data.get("instances", {}).items()}


def read_case(case: RawCase) -> tuple[np.ndarray, np.ndarray | None, dict[int, int], dict]:
    """Load a case.

    Returns:
        images: float32 [C, *spatial], one channel per modality.
        instance_map: int32 [*spatial] or None for an unlabelled case.
        instances: ``{instance id: class id}`` (empty when unlabelled or without objects).
        geometry: of the first modality, as :func:`nndet.data.io.read_image` returns it.
    """
    arrays, geometry = [], None
    for path in case.images:
        array, geo = read_image(path)
        arrays.append(array.astype(np.float32, copy=False))
        geometry = geometry or geo
    instance_map, instances = None, {}
    if case.label is not None:
        instance_map = read_image(case.label)[0].astype(np.int32, copy=False)
        if case.label_json is not None:
            instances = read_instances(case.label_json)
    return np.stack(arrays), instance_map, instances, geometry
