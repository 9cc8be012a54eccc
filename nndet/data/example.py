"""The example tasks of DESIGN.md (Task101-Task104): synthetic data with exact ground truth.

| task | content |
|---|---|
| ``Task101_ToyShapes`` | 2D circles (20 px, class 0) vs donuts (20 px, 4 px hole in image, label) |
| ``Task102_ToyPatterns`` | as Task101, but the donut's label is the full disc |
| ``Task103_ToyScales`` | 2D circles of 19 px (class 0) vs 20 px (class 1) |
| ``Task104_ToyNodules3D`` | 3D CT-like chest crops with solid (0) and part-solid (1) nodules |

Every case is drawn from its own generator seeded by ``(seed, task, split, case index)``, so a
case does not change when the number of cases does, and cases can be drawn in parallel.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nndet.data.io import save_json, write_image
from nndet.data.paths import task_number

logger = logging.getLogger(__name__)

# image [*spatial], instance map [*spatial] (0 background), {instance id: class}, geometry
Case = tuple[np.ndarray, np.ndarray, dict[int, int], dict]
SPLITS = ("Tr", "Ts")

# --- 2D toys --------------------------------------------------------------------------------

TOY_SHAPE = (320, 320)
TOY_RAISE = 0.2  # object intensity above the zero background (DESIGN.md)
TOY_GAP = 4  # pixels kept free between the boxes of two objects
TOY_GEOMETRY = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0]}


@dataclass(frozen=True)
class ToyShape:
    """A disc of ``diameter`` pixels with a centred hole (0: none) in the image and label."""

    diameter: int
    image_hole: int = 0
    label_hole: int = 0


def disc_stencil(diameter: int, hole: int = 0) -> np.ndarray:
    """bool [diameter, diameter]: pixels whose centre lies within the disc and outside the hole.

    The disc is centred on its window, so its box is exactly ``diameter`` pixels on each axis
    (odd diameters centre on a pixel, even ones on a pixel corner).
    """
    offsets = np.arange(diameter) + 0.5 - diameter / 2
    dist2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
    return (dist2 <= (diameter / 2) ** 2) & (dist2 > (hole / 2) ** 2 if hole else True)


def _place_boxes(
    rng: np.random.Generator, count: int, size: int, shape: tuple[int, ...], gap: int
) -> np.ndarray:
    """int [n <= count, D]: lower corners of ``size``-wide boxes that keep ``gap`` apart."""
    candidates = rng.integers(0, np.asarray(shape) - size + 1, size=(count * 20, len(shape)))
    kept = np.empty((0, len(shape)), dtype=np.int64)
    for corner in candidates:
        if len(kept) == count:
            break
        if len(kept) == 0 or np.abs(kept - corner).max(axis=1).min() >= size + gap:
            kept = np.vstack([kept, corner])
    return kept


def toy_case(
    rng: np.random.Generator, shapes: dict[int, ToyShape], noise: float, num_objects: int
) -> Case:
    """One 2D toy image: objects raised by 0.2 on zero, plus uniform noise from [0, noise).

    Args:
        shapes: the object drawn for each class id.
        num_objects: objects to place (fewer when they do not fit without overlap).
    """
    size = max(s.diameter for s in shapes.values())
    corners = _place_boxes(rng, num_objects, size, TOY_SHAPE, TOY_GAP)
    classes = rng.integers(0, len(shapes), size=len(corners))

    image = np.zeros(TOY_SHAPE, dtype=np.float32)
    instance_map = np.zeros(TOY_SHAPE, dtype=np.uint8)
    for index, (corner, cls) in enumerate(zip(corners, classes, strict=True), start=1):
        shape = shapes[int(cls)]
        window = tuple(slice(c, c + shape.diameter) for c in corner)
        image[window] += TOY_RAISE * disc_stencil(shape.diameter, shape.image_hole)
        instance_map[window][disc_stencil(shape.diameter, shape.label_hole)] = index

    image += rng.uniform(0.0, noise, size=TOY_SHAPE).astype(np.float32)
    instances = {i: int(c) for i, c in enumerate(classes, start=1)}
    return image, instance_map, instances, TOY_GEOMETRY


# --- 3D nodules -----------------------------------------------------------------------------

NODULE_SHAPE = (40, 128, 128)
NODULE_SHAPE_FULL = (64, 192, 192)
SLICE_SPACING_MM = (2.0, 3.0)  # median ratio to in-plane ~3.3: below the 2D-plan rule's 4
INPLANE_SPACING_MM = (0.7, 0.8)
NODULE_DIAMETER_MM = (3.0, 20.0)  # drawn log-uniformly: small nodules are common
HU_AIR, HU_TISSUE, HU_LUNG = -1000.0, 40.0, -850.0
HU_SOLID, HU_GROUND_GLASS = 30.0, -500.0
NOISE_HU_PER_UNIT = 60.0  # noise 0.5 (the 2D default) gives 30 HU, typical of low-dose CT


def _chest(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """HU float32 [Z, Y, X] of a body with two lungs, and the bool lung mask."""
    z, y, x = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    z, y, x = z[:, None, None], y[None, :, None], x[None, None, :]
    body = np.broadcast_to((x / 0.95) ** 2 + (y / 0.8) ** 2 <= 1, shape)
    # lungs narrow towards the top and bottom slices, and differ a little per case
    taper = 1 - 0.3 * z**2
    ax, ay = rng.uniform(0.3, 0.38, 2), rng.uniform(0.55, 0.65, 2)
    lungs = np.zeros(shape, dtype=bool)
    for side, a, b in zip((-1, 1), ax, ay, strict=True):
        lungs |= ((x - side * 0.42) / (a * taper)) ** 2 + (y / (b * taper)) ** 2 <= 1
    lungs &= body
    hu = np.where(body, HU_TISSUE, HU_AIR).astype(np.float32)
    hu[lungs] = HU_LUNG
    return hu, lungs


def _draw_nodule(
    hu: np.ndarray, instance_map: np.ndarray, centre: np.ndarray, radius: float,
    spacing: np.ndarray, cls: int, index: int,
) -> None:  # fmt: skip
    """Paint one nodule in place; class 0 solid, class 1 a ground-glass halo with a solid core."""
    half = np.ceil(radius / spacing).astype(int) + 2
    lo, hi = np.maximum(centre - half, 0), np.minimum(centre + half + 1, hu.shape)
    window = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    axes = [(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing, strict=True)]
    dist = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2] ** 2)

    # a soft 0.5 mm edge mimics the partial volume effect of a real scanner
    def blend(r: float) -> np.ndarray:
        return 1 / (1 + np.exp((dist - r) / 0.5))

    local = hu[window]
    if cls == 0:
        local += (HU_SOLID - local) * blend(radius)
    else:
        local += (HU_GROUND_GLASS - local) * blend(radius)
        local += (HU_SOLID - local) * blend(0.4 * radius)
    instance_map[window][dist <= radius] = index


def nodule_case(
    rng: np.random.Generator, noise: float, num_objects: int, full: bool = False
) -> Case:
    """One CT-like chest crop (int16 HU) with up to ``num_objects`` nodules in its lungs."""
    base = np.asarray(NODULE_SHAPE_FULL if full else NODULE_SHAPE)
    shape = tuple(int(n) for n in base + rng.integers(-base // 10, base // 10 + 1))
    inplane = rng.uniform(*INPLANE_SPACING_MM)
    spacing = np.array([rng.uniform(*SLICE_SPACING_MM), inplane, inplane])
    hu, lungs = _chest(shape, rng)
    instance_map = np.zeros(shape, dtype=np.uint8)

    instances: dict[int, int] = {}
    placed: list[tuple[np.ndarray, float]] = []
    lung_voxels = np.argwhere(lungs)
    for _ in range(num_objects * 30 if len(lung_voxels) else 0):
        if len(placed) == num_objects:
            break
        radius = np.exp(rng.uniform(*np.log(NODULE_DIAMETER_MM))) / 2
        centre = lung_voxels[rng.integers(len(lung_voxels))]
        if not _fits(centre, radius, spacing, lungs, placed):
            continue
        cls = int(rng.integers(2))
        _draw_nodule(hu, instance_map, centre, radius, spacing, cls, len(placed) + 1)
        placed.append((centre, radius))
        instances[len(placed)] = cls

    hu += rng.uniform(-40, 40)  # per-case calibration offset
    hu += rng.normal(0.0, NOISE_HU_PER_UNIT * noise, size=shape).astype(np.float32)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    extent = np.asarray(shape) * spacing
    geometry = {
        "spacing": spacing.tolist(),
        # ITK (x, y, z): centred in-plane, an arbitrary table position along z
        "origin": [-extent[2] / 2, -extent[1] / 2, float(rng.uniform(-400, -100))],
        "direction": np.eye(3).ravel().tolist(),
    }
    return image, instance_map, instances, geometry


def _fits(
    centre: np.ndarray, radius: float, spacing: np.ndarray, lungs: np.ndarray,
    placed: list[tuple[np.ndarray, float]],
) -> bool:  # fmt: skip
    """Whether a nodule lies inside the lungs and at least 2 mm from every placed one."""
    for other, r in placed:
        if np.linalg.norm((centre - other) * spacing) < radius + r + 2.0:
            return False
    half = np.ceil(radius / spacing).astype(int)
    lo, hi = centre - half, centre + half + 1
    if (lo < 0).any() or (hi > lungs.shape).any():
        return False
    window = lungs[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    axes = [(np.arange(-h, h + 1) * s) for h, s in zip(half, spacing, strict=True)]
    dist = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2] ** 2)
    return bool(window[dist <= radius].all())


# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExampleTask:
    """One example task: its ``dataset.json`` fields, default sizes and case generator."""

    number: int
    name: str
    dim: int
    modalities: dict[str, str]
    labels: dict[str, str]
    description: str
    sizes: tuple[int, int]  # (train, test) by default
    full_sizes: tuple[int, int]  # (train, test) with ``full``
    max_objects: int  # objects per case are drawn from 1..max_objects
    empty_fraction: float = 0.0  # share of cases without objects
    toy_shapes: dict[int, ToyShape] | None = None  # 2D toys only

    @property
    def folder(self) -> str:
        return f"Task{self.number:03d}_{self.name}"

    def make_case(self, rng: np.random.Generator, noise: float, empty: bool, full: bool) -> Case:
        num_objects = 0 if empty else int(rng.integers(1, self.max_objects + 1))
        if self.toy_shapes is not None:
            return toy_case(rng, self.toy_shapes, noise, num_objects)
        return nodule_case(rng, noise, num_objects, full)


def _toy(number: int, name: str, labels: dict[str, str], shapes: dict[int, ToyShape], text: str):
    return ExampleTask(
        number, name, 2, {"0": "toy"}, labels, text, (200, 100), (1000, 200), 5,
        toy_shapes=shapes,
    )  # fmt: skip


EXAMPLE_TASKS: dict[int, ExampleTask] = {
    101: _toy(
        101, "ToyShapes", {"0": "circle", "1": "donut"},
        {0: ToyShape(20), 1: ToyShape(20, image_hole=4, label_hole=4)},
        "2D circles (20 px) vs donuts (20 px, 4 px hole cut from image and label)",
    ),
    102: _toy(
        102, "ToyPatterns", {"0": "circle", "1": "donut"},
        {0: ToyShape(20), 1: ToyShape(20, image_hole=4)},
        "2D circles vs donuts whose label is the full disc: the class is only in the pattern",
    ),
    103: _toy(
        103, "ToyScales", {"0": "circle_19px", "1": "circle_20px"},
        {0: ToyShape(19), 1: ToyShape(20)},
        "2D circles of 19 px vs 20 px: the class is only in the size",
    ),
    104: ExampleTask(
        104, "ToyNodules3D", 3, {"0": "CT"}, {"0": "solid", "1": "part_solid"},
        "3D CT-like chest crops (HU, anisotropic spacing) with solid and part-solid nodules"
        " of 3-20 mm; about a fifth of the cases have none",
        (24, 8), (100, 25), 3, empty_fraction=0.2,
    ),
}  # fmt: skip


def example_task(task: str | int) -> ExampleTask:
    """The example task that ``task`` names (``Task101``, ``101``, ``Task101_ToyShapes``)."""
    number = task_number(task)
    if number not in EXAMPLE_TASKS:
        known = ", ".join(t.folder for t in EXAMPLE_TASKS.values())
        raise ValueError(f"{task!r} is not an example task: choose one of {known}")
    return EXAMPLE_TASKS[number]


# --- writing --------------------------------------------------------------------------------


def case_ids(split: str, count: int) -> list[str]:
    """Case ids of a split: ``case0000, ...`` for training, ``test0000, ...`` for test."""
    prefix = "case" if split == "Tr" else "test"
    return [f"{prefix}{i:04d}" for i in range(count)]


def example_counts(
    spec: ExampleTask, num_train: int | None = None, num_test: int | None = None, full=False
) -> tuple[int, int]:
    """(train, test) case counts: the given ones, else the task's default or full sizes."""
    default = spec.full_sizes if full else spec.sizes
    counts = (default[0] if num_train is None else num_train,
              default[1] if num_test is None else num_test)  # fmt: skip
    if min(counts) < 0:
        raise ValueError(f"case counts must not be negative, got {counts}")
    return counts


def _write_split(
    spec: ExampleTask, out: Path, split: str, count: int, noise: float, seed: int, full: bool,
    progress: Callable[[str], None] | None, workers: int,
) -> None:  # fmt: skip
    split_index = SPLITS.index(split)
    split_rng = np.random.default_rng([seed, spec.number, split_index])
    num_empty = (
        max(1, round(spec.empty_fraction * count)) if spec.empty_fraction and count > 1 else 0
    )
    empty = set(split_rng.choice(count, size=num_empty, replace=False).tolist())
    images, labels = (
        out / "raw_splitted" / f"images{split}",
        out / "raw_splitted" / f"labels{split}",
    )

    def write(index: int) -> str:
        case_id = case_ids(split, count)[index]
        rng = np.random.default_rng([seed, spec.number, split_index, index])
        image, instance_map, instances, geometry = spec.make_case(rng, noise, index in empty, full)
        write_image(image, images / f"{case_id}_0000.nii.gz", geometry)
        write_image(instance_map, labels / f"{case_id}.nii.gz", geometry)
        save_json(
            {"instances": {str(k): v for k, v in instances.items()}}, labels / f"{case_id}.json"
        )
        return case_id

    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    # numpy, zlib and SimpleITK release the GIL for the heavy parts: threads help
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for case_id in pool.map(write, range(count)):
            if progress is not None:
                progress(case_id)


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an old ``target`` is moved aside first, then deleted."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        target.rename(old / target.name)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old)


def write_example_task(
    task: str | int,
    root: Path | str,
    num_train: int | None = None,
    num_test: int | None = None,
    noise: float = 0.5,
    seed: int = 0,
    full: bool = False,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    workers: int = 4,
) -> Path:
    """Write an example task in the raw layout, with labelled training and test splits.

    The task is written into a hidden folder beside its target and renamed at the end, so an
    interrupted run leaves no half-written task.

    Args:
        task: ``Task101``, ``101``, ``Task101_ToyShapes`` ... (see :data:`EXAMPLE_TASKS`).
        root: the data root that receives ``TaskNNN_Name/``.
        num_train, num_test: case counts; None takes the task's default (or full) size.
        noise: 2D toys: per-pixel uniform noise from ``[0, noise)``; Task104: Gaussian noise
            of ``60 * noise`` HU standard deviation.
        seed: the same seed, counts and options write identical arrays.
        full: larger default sizes (2D: 1000 + 200 cases; 3D: 100 + 25 cases of ~64x192x192).
        overwrite: replace an existing task folder of the same name.
        progress: called with each case id once the case is written.
        workers: threads that draw and write cases.

    Returns:
        The task folder.

    Raises:
        FileExistsError: the task exists and ``overwrite`` is False, or another folder
            already uses the task's number.
    """
    spec = example_task(task)
    root = Path(root)
    target = root / spec.folder
    clashes = [p.name for p in root.glob(f"Task{spec.number:03d}_*") if p.name != spec.folder]
    if clashes:
        raise FileExistsError(f"{root} already holds {clashes[0]} with number {spec.number}:"
                              " move it away before writing the example task")  # fmt: skip
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists: pass overwrite=True (--overwrite) to replace it")
    if seed < 0 or noise < 0:
        raise ValueError(f"seed and noise must not be negative, got seed={seed}, noise={noise}")
    num_train, num_test = example_counts(spec, num_train, num_test, full)

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", suffix=".tmp", dir=root))
    try:
        for split, count in zip(SPLITS, (num_train, num_test), strict=True):
            _write_split(spec, tmp, split, count, noise, seed, full, progress, workers)
        save_json(_dataset_json(spec, num_train, num_test, noise, seed, full), tmp / "dataset.json")
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s (%d training, %d test cases)", target, num_train, num_test)
    return target


def _dataset_json(
    spec: ExampleTask, num_train: int, num_test: int, noise: float, seed: int, full: bool
) -> dict:
    return {
        "task": spec.folder,
        "name": spec.name,
        "dim": spec.dim,
        "modalities": spec.modalities,
        "labels": spec.labels,
        "test_labels": True,
        "description": spec.description,
        "num_training": num_train,
        "num_test": num_test,
        "example": {"seed": seed, "noise": noise, "full": full},
    }
