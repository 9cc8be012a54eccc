"""The prediction output format: ``CASE_boxes.json`` per case and ``predictions.csv``.

Per case (``documentation/evaluation.md`` and DESIGN.md, "Prediction output")::

    {"case_id": "case0001", "dim": 3, "image_shape": [48, 160, 160],
     "spacing": [2.5, 0.75, 0.75], "origin": [x, y, z], "direction": [9 numbers],
     "score_threshold": 0.42,
     "boxes": [{"box": [lo0, lo1, lo2, hi0, hi1, hi2], "score": 0.93, "label": 1,
                "class": "malignant", "center_world": [x, y, z]}]}

``spacing`` and the boxes follow the array axes (as ``SimpleITK.GetArrayFromImage`` returns
them); ``origin``, ``direction`` and ``center_world`` follow ITK's (x, y, z).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nndet.data.io import atomic_write, load_json, save_json

BOXES_SUFFIX = "_boxes.json"
CSV_NAME = "predictions.csv"
_REQUIRED_KEYS = ("case_id", "dim", "boxes")


def prediction_path(directory: Path | str, case_id: str) -> Path:
    """Where the prediction of ``case_id`` lives in a prediction folder."""
    return Path(directory) / f"{case_id}{BOXES_SUFFIX}"


def case_id_of(path: Path | str) -> str:
    """Case id of a ``CASE_boxes.json`` file name."""
    name = Path(path).name
    if not name.endswith(BOXES_SUFFIX):
        raise ValueError(f"{path} is not a prediction file: its name must end in {BOXES_SUFFIX}")
    return name[: -len(BOXES_SUFFIX)]


def box_centers_world(boxes: np.ndarray, geometry: Mapping[str, Any]) -> np.ndarray:
    """Physical centres (ITK x, y, z order, mm) of boxes in array voxel coordinates.

    Args:
        boxes: float [N, 2*D], nndet's box convention (array axis order, ``hi`` exclusive).
        geometry: ``spacing`` (array axis order), ``origin`` and ``direction`` (ITK order,
            direction flattened row-major), as :func:`nndet.data.io.read_image` returns them.

    Returns:
        float [N, D]: ``origin + direction @ (index * spacing)`` with ``index`` the ITK
        continuous index of the box centre (voxel centres on integers, hence ``c - 0.5``).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1])
    dim = boxes.shape[1] // 2
    centers = (boxes[:, :dim] + boxes[:, dim:]) / 2.0
    index_xyz = (centers - 0.5)[:, ::-1]
    spacing_xyz = np.asarray(geometry["spacing"], dtype=np.float64)[::-1]
    origin = np.asarray(geometry["origin"], dtype=np.float64)
    direction = np.asarray(geometry["direction"], dtype=np.float64).reshape(dim, dim)
    return origin[None] + (index_xyz * spacing_xyz[None]) @ direction.T


def _as_numpy(array: Any, dtype: type) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor: numpy lives at this I/O edge
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=dtype)


def _class_name(class_names: Mapping[int, str] | Sequence[str] | None, label: int) -> str:
    if class_names is None:
        return str(label)
    if isinstance(class_names, Mapping):
        return str(class_names.get(label, label))
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def write_case_prediction(
    path_or_dir: Path | str,
    case_id: str,
    boxes: Any,
    scores: Any,
    labels: Any,
    class_names: Mapping[int, str] | Sequence[str] | None,
    geometry: Mapping[str, Any],
    image_shape: Sequence[int],
    score_threshold: float | None = None,
) -> Path:
    """Write one case's boxes as ``CASE_boxes.json`` (atomically), sorted by score.

    Args:
        path_or_dir: the ``.json`` file to write, or a folder (``CASE_boxes.json`` inside).
        boxes: float [N, 2*D] numpy or torch, in the coordinates of the original image.
        scores: float [N].
        labels: int [N], class ids from 0.
        class_names: ``{id: name}`` or a list indexed by id (``None``: names are the ids).
        geometry: ``spacing`` (array order), ``origin``, ``direction`` of the original image.
        image_shape: shape of the original image, array order.
        score_threshold: the operating point chosen by the sweep (``None`` before a sweep).

    Returns:
        The path written.
    """
    dim = len(image_shape)
    boxes_np = _as_numpy(boxes, np.float64).reshape(-1, 2 * dim)
    scores_np = _as_numpy(scores, np.float64).reshape(-1)
    labels_np = _as_numpy(labels, np.int64).reshape(-1)
    if not len(boxes_np) == len(scores_np) == len(labels_np):
        raise ValueError(
            f"case {case_id}: {len(boxes_np)} boxes, {len(scores_np)} scores and "
            f"{len(labels_np)} labels: they must have one entry per box"
        )

    order = np.argsort(-scores_np, kind="stable")
    centers = box_centers_world(boxes_np, geometry)
    entries = [
        {
            "box": boxes_np[i].tolist(),
            "score": float(scores_np[i]),
            "label": int(labels_np[i]),
            "class": _class_name(class_names, int(labels_np[i])),
            "center_world": centers[i].tolist(),
        }
        for i in order
    ]
    record = {
        "case_id": case_id,
        "dim": dim,
        "image_shape": [int(s) for s in image_shape],
        "spacing": [float(s) for s in geometry["spacing"]],
        "origin": [float(o) for o in geometry["origin"]],
        "direction": [float(d) for d in geometry["direction"]],
        "score_threshold": None if score_threshold is None else float(score_threshold),
        "boxes": entries,
    }

    path = Path(path_or_dir)
    if path.suffix != ".json":
        path = prediction_path(path, case_id)
    save_json(record, path)
    return path


def read_case_prediction(path: Path | str) -> dict[str, Any]:
    """Read a ``CASE_boxes.json``.

    Returns:
        The file's fields, with the boxes as arrays: ``boxes`` float [N, 2*D], ``scores``
        float [N], ``labels`` int64 [N], ``classes`` list of N names, ``center_world``
        float [N, D]; boxes stay in the file's order (sorted by score when nndet wrote it).
    """
    path = Path(path)
    record = load_json(path)
    missing = [key for key in _REQUIRED_KEYS if not isinstance(record, dict) or key not in record]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)}: it is not a prediction file in nndet's format "
            "(see documentation/evaluation.md); predict the case again"
        )
    dim = int(record["dim"])
    try:
        entries = record["boxes"]
        boxes = np.array([e["box"] for e in entries], dtype=np.float64).reshape(-1, 2 * dim)
        scores = np.array([e["score"] for e in entries], dtype=np.float64)
        labels = np.array([e["label"] for e in entries], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{path}: every entry of 'boxes' needs 'box' ({2 * dim} numbers for dim {dim}), "
            f"'score' and 'label' ({err}); predict the case again"
        ) from err
    centers = [e.get("center_world") for e in entries]
    result = dict(record)
    result.update(
        boxes=boxes,
        scores=scores,
        labels=labels,
        classes=[str(e.get("class", e["label"])) for e in entries],
        center_world=np.array(centers, dtype=np.float64).reshape(-1, dim)
        if all(c is not None for c in centers)
        else None,
    )
    return result


def write_predictions_csv(
    out_dir: Path | str, case_predictions: Iterable[Mapping[str, Any]]
) -> Path:
    """Write ``predictions.csv`` in ``out_dir``: one row per box of all cases.

    Columns: ``case_id,label,class,score,lo0,lo1[,lo2],hi0,hi1[,hi2],center_x,center_y,
    center_z``; ``center_z`` is empty in 2D.

    Args:
        out_dir: the prediction folder.
        case_predictions: records as :func:`read_case_prediction` returns them, one per case.
    """
    records = list(case_predictions)
    dims = {int(r["dim"]) for r in records}
    if len(dims) > 1:
        raise ValueError(f"cases of {out_dir} mix dimensions {sorted(dims)}: one CSV holds one")
    dim = dims.pop() if dims else 3
    header = ["case_id", "label", "class", "score"]
    header += [f"lo{a}" for a in range(dim)] + [f"hi{a}" for a in range(dim)]
    header += ["center_x", "center_y", "center_z"]

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        centers = record.get("center_world")
        for i, box in enumerate(record["boxes"]):
            center = [] if centers is None else [float(c) for c in centers[i]]
            center += [""] * (3 - len(center))
            row = [record["case_id"], int(record["labels"][i]), record["classes"][i]]
            row += [repr(float(record["scores"][i]))] + [repr(float(c)) for c in box] + center
            writer.writerow(row)

    path = Path(out_dir) / CSV_NAME
    text = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path
