"""Tiny preprocessed cases and plans for the training-data tests (no preprocessing run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nndet.data.instances import instance_boxes
from nndet.planning.plan import Normalization, Plan, Topology
from nndet.preprocessing.storage import CaseStore


def write_case(
    store: CaseStore,
    case_id: str,
    instance_map: np.ndarray,
    instances: dict[int, int],
    patch_size: list[int],
    channels: int = 1,
    seed: int = 0,
) -> None:
    """Store a case whose image is noise plus ``1 + class`` on each object's voxels.

    Properties follow the preprocessing contract (``instances``, ``ids``, ``classes``,
    ``boxes``, ``object_locations``), computed here from ``instance_map``.
    """
    rng = np.random.default_rng(seed)
    instance_map = np.asarray(instance_map, dtype=np.int16)
    lookup = np.zeros(max(instances, default=0) + 1, dtype=np.float32)
    for i, c in instances.items():
        lookup[i] = 1 + c
    image = rng.normal(0, 0.1, (channels, *instance_map.shape)).astype(np.float32)
    image += lookup[np.clip(instance_map, 0, None)][None]

    boxes = instance_boxes(instance_map)
    ids = sorted(i for i in instances if i in boxes)
    locations = {}
    for i in ids:
        voxels = np.argwhere(instance_map == i)
        locations[str(i)] = voxels[rng.choice(len(voxels), min(len(voxels), 50), False)].tolist()
    properties = {
        "case_id": case_id,
        "instances": {str(i): instances[i] for i in ids},
        "ids": ids,
        "classes": [instances[i] for i in ids],
        "boxes": [boxes[i] for i in ids],
        "object_locations": locations,
    }
    store.save_case(case_id, image, instance_map[None], properties, patch_size)


def blob_map(shape: tuple[int, ...], centres: list[tuple[int, ...]], radius: int) -> np.ndarray:
    """An instance map with a ball (id ``k + 1``) of ``radius`` around each centre."""
    grid = np.indices(shape)
    out = np.zeros(shape, dtype=np.int16)
    for k, centre in enumerate(centres):
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        out[dist2 <= radius**2] = k + 1
    return out


def make_store(folder: Path, dim: int, num_cases: int = 4, empty: int = 1) -> CaseStore:
    """A store of ``num_cases`` cases with two balls each (classes 0 and 1), the last
    ``empty`` of them without objects. 2D cases are 96x80, 3D cases 24x64x56."""
    store = CaseStore(folder)
    shape = (96, 80) if dim == 2 else (24, 64, 56)
    patch = [32, 32] if dim == 2 else [16, 32, 32]
    for k in range(num_cases):
        if k >= num_cases - empty:
            write_case(store, f"case{k}", np.zeros(shape, np.int16), {}, patch, seed=k)
            continue
        a = tuple(s // 4 for s in shape)
        b = tuple(3 * s // 4 for s in shape)
        write_case(store, f"case{k}", blob_map(shape, [a, b], 4), {1: 0, 2: 1}, patch, seed=k)
    return store


def make_plan(patch_size: list[int], batch_size: int, data_dim: int | None = None) -> Plan:
    """A plan with only the fields the loader reads set meaningfully."""
    dim = len(patch_size)
    data_dim = data_dim or dim
    return Plan(
        name="2d" if dim == 2 else "3d",
        dim=dim,
        data_dim=data_dim,
        spacing=[1.0] * data_dim,
        transpose=list(range(data_dim)),
        normalization=[Normalization(scheme="zscore")],
        patch_size=list(patch_size),
        batch_size=batch_size,
        topology=Topology(
            features_per_stage=[8, 16],
            kernel_sizes=[[3] * dim] * 2,
            strides=[[1] * dim, [2] * dim],
            n_conv_per_stage=[1, 1],
            n_conv_per_stage_decoder=[1],
        ),
        detection_levels=[1],
        anchors=[[[4.0] * dim]],
        anchor_iou=0.5,
        num_classes=2,
        num_modalities=1,
        epochs=1,
        iters_per_epoch=1,
    )
