"""The raw boxes of every view of one case, before any NMS or WBC, and their file.

A *view* is one network pass: one model (fold) on one mirror of one tile. Prediction keeps
every candidate box of every view in stored-case coordinates, so that the sweep can try
consolidation settings on out-of-fold predictions without running a network again.

File format (``fold<K>/val_views/CASE.pt``): ``torch.save`` of a dict holding only tensors,
strings, ints and lists, so it loads with ``torch.load(..., weights_only=True)``::

    format          "nndet_views"        version  1
    case_id         str
    boxes           float32 [N, 2*D]   candidates in stored-case voxels (D = data_dim)
    scores          float32 [N]
    labels          int64   [N]        class ids from 0
    view_ids        int64   [N]        index into the view table
    view_model      int64   [V]        which model (fold) made view v
    view_mirror     int64   [V]        index into mirror_axes
    view_tile       int64   [V]        index into tile_starts
    mirror_axes     list of M lists    the flipped network axes of each mirror; [] = identity
    tile_starts     int64   [T, D]     tile start corners in stored-case voxels
    tile_size       int64   [D]        (1 on the slice axis of a 2d plan on 3D data)
    image_shape     int64   [D]        the stored case's spatial shape
    net_dim         int                2 or 3, the dimension the network works in
    num_models      int
    properties      str                the case's preprocessing properties as JSON
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nndet.data.io import _to_jsonable, atomic_write

FORMAT = "nndet_views"
VERSION = 1
SUFFIX = ".pt"
_TENSORS = (
    "boxes", "scores", "labels", "view_ids", "view_model", "view_mirror", "view_tile",
    "tile_starts", "tile_size", "image_shape",
)  # fmt: skip


@dataclass
class CaseViews:
    """Every view's raw boxes of one case (see the module docstring for the fields)."""

    case_id: str
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    view_ids: Tensor
    view_model: Tensor
    view_mirror: Tensor
    view_tile: Tensor
    mirror_axes: list[list[int]]
    tile_starts: Tensor
    tile_size: Tensor
    image_shape: Tensor
    net_dim: int
    num_models: int
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dim(self) -> int:
        return int(self.image_shape.numel())

    @property
    def num_views(self) -> int:
        return int(self.view_model.numel())

    def tile_boxes(self) -> Tensor:
        """Every tile as a box: float ``[T, 2*D]`` in stored-case coordinates."""
        starts = self.tile_starts.float()
        return torch.cat([starts, starts + self.tile_size.float()], dim=1)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "properties":
                value = json.dumps(value, default=_to_jsonable)
            elif isinstance(value, Tensor):
                value = value.detach().cpu().contiguous()
            record[f.name] = value
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any], source: str = "views") -> CaseViews:
        if record.get("format") != FORMAT or record.get("version") != VERSION:
            raise ValueError(
                f"{source} is not an nndet views file of version {VERSION}: "
                "predict the validation cases of this fold again"
            )
        values = {f.name: record[f.name] for f in fields(cls)}
        values["properties"] = json.loads(values["properties"])
        values["mirror_axes"] = [list(m) for m in values["mirror_axes"]]
        return cls(**values)


def views_path(directory: Path | str, case_id: str) -> Path:
    """Where the views of ``case_id`` live in a ``val_views`` folder."""
    return Path(directory) / f"{case_id}{SUFFIX}"


def save_views(views: CaseViews, directory: Path | str) -> Path:
    """Write ``directory/CASE.pt`` atomically; returns the path."""
    path = views_path(directory, views.case_id)
    record = views.to_dict()
    atomic_write(path, lambda tmp: torch.save(record, tmp))
    return path


def load_views(path: Path | str) -> CaseViews:
    """Read a views file written by :func:`save_views` (no pickle: ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no views file {path}: predict the validation cases first")
    record = torch.load(path, map_location="cpu", weights_only=True)
    return CaseViews.from_dict(record, source=str(path))


def list_views(directory: Path | str) -> list[str]:
    """Case ids with a views file in ``directory``, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in directory.glob(f"*{SUFFIX}"))
