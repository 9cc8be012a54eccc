"""The plan: everything the later steps need to know about one configuration, as frozen data.

A plan is written by :mod:`nndet.planning.planner` into ``preprocessed/plans.json``
(``{"nndet_version", "default", "plans": {name: plan}}``) and read back with
:func:`load_plans`. Every field is documented in ``documentation/planning.md``.

Axes: ``spacing``, ``patch_size`` and anchor sizes follow the axes of the *stored*
(preprocessed, transposed) case; ``transpose`` maps raw array axes to stored axes
(``stored = raw.transpose(transpose)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nndet.data.io import load_json, save_json


@dataclass(frozen=True)
class Normalization:
    """Intensity normalisation of one modality.

    ``scheme`` is ``"ct"`` (clip to ``[lower, upper]``, the 0.5/99.5 foreground percentiles,
    then subtract ``mean`` and divide by ``std`` of the foreground) or ``"zscore"``
    (per-case mean and standard deviation; the stored statistics are unused).
    """

    scheme: str
    mean: float | None = None
    std: float | None = None
    lower: float | None = None
    upper: float | None = None


@dataclass(frozen=True)
class Topology:
    """Encoder/decoder shape for dynamic-network-architectures, one entry per stage.

    Stage ``s`` of the encoder works at decoder level ``P_s``: ``P0`` is full resolution and
    level ``s`` is downsampled by the product of ``strides[1..s]`` per axis.
    """

    features_per_stage: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    n_conv_per_stage: list[int]
    n_conv_per_stage_decoder: list[int]

    @property
    def num_stages(self) -> int:
        return len(self.features_per_stage)

    def level_stride(self, level: int) -> list[int]:
        """Voxels of the input per feature voxel at decoder level ``level``, per axis."""
        stride = [1] * len(self.strides[0])
        for s in self.strides[1 : level + 1]:
            stride = [a * b for a, b in zip(stride, s, strict=True)]
        return stride


@dataclass(frozen=True)
class Plan:
    """One named configuration (``"3d"`` or ``"2d"``) of a task."""

    name: str
    dim: int  # spatial dimensions of the network (2 or 3)
    data_dim: int  # spatial dimensions of the stored cases (3 for a 2d plan on 3D data)
    spacing: list[float]  # target spacing (mm) per stored axis, data_dim entries
    transpose: list[int]  # stored = raw.transpose(transpose) over the spatial axes
    normalization: list[Normalization]  # one per modality, in modality order
    patch_size: list[int]  # dim entries, in voxels of the stored case
    batch_size: int
    topology: Topology
    detection_levels: list[int]  # decoder levels that carry detection heads, e.g. [2, 3, 4, 5]
    anchors: list[list[list[float]]]  # per detection level: A anchor sizes [A][dim] in voxels
    anchor_iou: float  # mean best-anchor IoU of the training boxes with these anchors
    num_classes: int  # object classes (no background)
    num_modalities: int
    epochs: int
    iters_per_epoch: int
    target: str = "gpu"  # "gpu" or "cpu": the budget this plan was made for
    gpu_memory_gb: float | None = 8.0
    median_shape: list[int] = field(default_factory=list)  # stored cases, data_dim entries
    extra: dict[str, Any] = field(default_factory=dict)  # planner notes (rules that fired)

    @property
    def num_anchors(self) -> int:
        """Anchors per position (A), equal on every detection level."""
        return len(self.anchors[0])

    def level_strides(self) -> list[list[int]]:
        """The stride (voxels per feature voxel) of every detection level, per axis."""
        return [self.topology.level_stride(level) for level in self.detection_levels]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        data = dict(data)
        data["normalization"] = [Normalization(**n) for n in data["normalization"]]
        data["topology"] = Topology(**data["topology"])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown plan fields {sorted(unknown)}: re-run `nndet_prep`")
        return cls(**data)


@dataclass(frozen=True)
class Plans:
    """All plans of a task and the name of the default one."""

    plans: dict[str, Plan]
    default: str
    nndet_version: str

    def get(self, name: str | None = None) -> Plan:
        """The plan called ``name``, or the default plan when ``name`` is None."""
        name = self.default if name is None else name
        if name not in self.plans:
            raise KeyError(f"no plan {name!r}; this task has {sorted(self.plans)}")
        return self.plans[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "nndet_version": self.nndet_version,
            "default": self.default,
            "plans": {name: plan.to_dict() for name, plan in self.plans.items()},
        }


def save_plans(plans: Plans, path: Path | str) -> None:
    save_json(plans.to_dict(), path)


def load_plans(path: Path | str) -> Plans:
    """Read ``plans.json``; a missing file names the command that writes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no plans at {path}: run `nndet_prep <task>` first")
    data = load_json(path)
    plans = {name: Plan.from_dict(p) for name, p in data["plans"].items()}
    return Plans(plans=plans, default=data["default"], nndet_version=data["nndet_version"])
