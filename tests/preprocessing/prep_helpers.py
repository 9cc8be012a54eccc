"""Small synthetic plans and raw tasks for the preprocessing tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nndet.data.io import save_json, write_image
from nndet.planning.plan import Normalization, Plan, Topology


def make_plan(
    spacing: list[float],
    transpose: list[int] | None = None,
    dim: int | None = None,
    normalization: list[Normalization] | None = None,
    patch_size: list[int] | None = None,
    name: str = "test",
) -> Plan:
    """A plan with only the fields preprocessing reads set to something meaningful."""
    data_dim = len(spacing)
    dim = dim or data_dim
    normalization = normalization or [Normalization("zscore")]
    return Plan(
        name=name,
        dim=dim,
        data_dim=data_dim,
        spacing=spacing,
        transpose=transpose or list(range(data_dim)),
        normalization=normalization,
        patch_size=patch_size or [16] * dim,
        batch_size=2,
        topology=Topology([8, 16], [[3] * dim] * 2, [[1] * dim, [2] * dim], [1, 1], [1]),
        detection_levels=[1],
        anchors=[[[4.0] * dim]],
        anchor_iou=0.5,
        num_classes=2,
        num_modalities=len(normalization),
        epochs=1,
        iters_per_epoch=1,
    )


def geometry(spacing: list[float]) -> dict:
    """A geometry dict as nndet.data.io.read_image returns it, identity direction."""
    d = len(spacing)
    return {
        "spacing": list(spacing),
        "origin": [0.0] * d,
        "direction": np.eye(d).ravel().tolist(),
        "shape": [],
    }


def balls_case(
    shape: tuple[int, ...],
    centres: list[tuple[int, ...]],
    radii: list[float],
    border: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """An image with noise inside a zero border and bright balls; their instance map (1..N)."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    inner = tuple(slice(border, n - border) for n in shape)
    image[inner] = rng.normal(100, 10, size=image[inner].shape) + 1
    instance_map = np.zeros(shape, np.int32)
    grid = np.indices(shape)
    for obj_id, (centre, radius) in enumerate(zip(centres, radii, strict=True), start=1):
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        instance_map[dist2 <= radius**2] = obj_id
        image[dist2 <= radius**2] += 200
    return image, instance_map


def write_case(
    task_dir: Path,
    case_id: str,
    image: np.ndarray,
    instance_map: np.ndarray,
    classes: dict[int, int],
    spacing: list[float],
    split: str = "Tr",
) -> None:
    """Write one raw case in nnDetection's layout (NIfTI image, label map and json)."""
    geo = geometry(spacing)
    raw = task_dir / "raw_splitted"
    write_image(image, raw / f"images{split}" / f"{case_id}_0000.nii.gz", geo)
    write_image(instance_map, raw / f"labels{split}" / f"{case_id}.nii.gz", geo)
    instances = {str(k): v for k, v in classes.items()}
    save_json({"instances": instances}, raw / f"labels{split}" / f"{case_id}.json")


def write_dataset_json(task_dir: Path, dim: int, modality: str = "CT") -> None:
    save_json(
        {
            "task": task_dir.name,
            "name": task_dir.name,
            "dim": dim,
            "modalities": {"0": modality},
            "labels": {"0": "a", "1": "b"},
            "test_labels": False,
        },
        task_dir / "dataset.json",
    )
