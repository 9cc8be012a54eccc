"""Training batches: patches cut from the stored cases, augmented, with their targets.

:class:`PatchSampler` picks cases and patch positions (a third of each batch centred on an
object, as nnU-Net oversamples foreground), crops straight from the blosc2 arrays with
acvl-utils' ``crop_and_pad_nd`` (only the needed chunks are decompressed), augments image and
instance map jointly (:mod:`nndet.training.augmentation`) and derives boxes, labels and the
semantic map from the transformed instance map (:mod:`nndet.training.targets`).
:func:`make_train_loader` runs it in background worker processes.

A batch is a dict:

- ``"image"``: float32 ``[B, C, *patch]``
- ``"seg"``: int64 ``[B, *patch]`` semantic map, 0 background, ``class + 1`` on objects. The
  region outside the nonzero crop mask (``-1`` in the store) and the padding beyond the case
  are background 0: no object lies there, and the detector must learn to find none.
- ``"instances"``: int16 ``[B, *patch]`` the transformed instance map the targets came from
- ``"boxes"``: B float32 tensors ``[G_b, 2*D]`` in patch voxel coordinates (nndet convention)
- ``"labels"``: B int64 tensors ``[G_b]``, class ids from 0
- ``"case_ids"``: B case ids
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

from nndet.planning.plan import Plan
from nndet.preprocessing.storage import CaseStore
from nndet.training.augmentation import TrainingAugmentation
from nndet.training.targets import class_lookup, instance_targets

# Share of each batch centred on an object: nnU-Net's oversample_foreground_percent (0.33).
FOREGROUND_FRACTION = 1 / 3


class PatchSampler:
    """Builds batches of patches from the cases of a :class:`CaseStore`.

    Args:
        store: the plan's preprocessed cases.
        case_ids: the cases to sample from (a fold's training cases).
        patch_size: the final patch, ``dim`` edges along the stored axes.
        batch_size: patches per batch (B).
        augmentation: None for unaugmented patches (validation).
        foreground_fraction: share of each batch centred on an object.
        seed: seeds every random draw of this sampler (see :meth:`reseed`).

    Notes:
        Case and position draws use a numpy Generator of the sampler; batchgeneratorsv2
        draws from the global numpy and torch generators, so the sampler swaps its own state
        of those in for each batch and out again: a training loop that uses the global
        generators neither changes the batches nor is changed by them.
    """

    def __init__(
        self,
        store: CaseStore,
        case_ids: Sequence[str],
        patch_size: Sequence[int],
        batch_size: int,
        augmentation: TrainingAugmentation | None = None,
        foreground_fraction: float = FOREGROUND_FRACTION,
        seed: int = 0,
    ):
        if not case_ids:
            raise ValueError(f"no cases to sample from in {store.folder}")
        self.store = store
        self.case_ids = list(case_ids)
        self.patch_size = [int(p) for p in patch_size]
        self.batch_size = int(batch_size)
        self.augmentation = augmentation
        self.foreground_fraction = foreground_fraction

        self._properties = {c: store.load_properties(c) for c in self.case_ids}
        self._classes = {c: class_lookup(p["instances"]) for c, p in self._properties.items()}
        self._objects = {c: _object_locations(p) for c, p in self._properties.items()}
        self._with_objects = [c for c in self.case_ids if self._objects[c]]
        self._arrays: dict[str, tuple[Any, Any]] = {}
        self._arrays_pid = os.getpid()
        self.reseed(seed)

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Restart every random stream of this sampler from ``seed``."""
        sequence = np.random.SeedSequence(seed)
        self._rng = np.random.default_rng(sequence)
        np_seed, torch_seed = sequence.generate_state(2)
        self._np_state = np.random.RandomState(int(np_seed)).get_state()
        self._torch_state = torch.Generator().manual_seed(int(torch_seed)).get_state()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.sample_batch()

    def sample_batch(self) -> dict[str, Any]:
        """One batch (see the module docstring for its keys and shapes)."""
        chosen = list(self._rng.choice(len(self.case_ids), self.batch_size, replace=True))
        case_ids = [self.case_ids[i] for i in chosen]
        forced = self._forced_slots()

        samples = []
        with self._own_global_rng(), torch.no_grad():
            for slot, case_id in enumerate(case_ids):
                if slot in forced and not self._objects[case_id] and self._with_objects:
                    case_id = self._with_objects[self._rng.integers(len(self._with_objects))]
                    case_ids[slot] = case_id
                samples.append(self._sample(case_id, force_object=slot in forced))
        return _collate(samples, case_ids)

    def _forced_slots(self) -> set[int]:
        """Slots of the batch centred on an object: the last ``ceil(B * fraction)``.

        A batch of one is centred with probability ``fraction`` (rounding up would centre
        every batch of one, rounding down none, as in nnU-Net).
        """
        if self.batch_size == 1:
            count = int(self._rng.random() < self.foreground_fraction)
        else:
            count = math.ceil(self.batch_size * self.foreground_fraction - 1e-9)
        return set(range(self.batch_size - count, self.batch_size))

    def _sample(self, case_id: str, force_object: bool) -> dict[str, Any]:
        """Crop, augment and derive targets of one patch of ``case_id``."""
        data, seg = self._open(case_id)
        if self.augmentation is not None:
            crop_size, transform = self.augmentation.draw(self._rng)
        else:
            crop_size, transform = self.patch_size, None

        # A 2d plan on 3D data crops one slice along stored axis 0 and drops that axis.
        spatial = list(data.shape[1:])
        one_slice = len(spatial) == len(self.patch_size) + 1
        final = [1, *self.patch_size] if one_slice else self.patch_size
        crop = [1, *crop_size] if one_slice else list(crop_size)
        centre = self._object_voxel(case_id) if force_object else None
        bbox = _crop_bbox(spatial, final, crop, centre, self._rng)

        image = torch.from_numpy(np.asarray(crop_and_pad_nd(data, bbox, 0), dtype=np.float32))
        instances = torch.from_numpy(crop_and_pad_nd(seg, bbox, 0, cast_cropped_to=np.int16))
        instances.clamp_(min=0)  # outside the crop mask is background (module docstring)
        if one_slice:
            image, instances = image[:, 0], instances[:, 0]
        if transform is not None:
            out = transform(image=image, segmentation=instances)
            image, instances = out["image"], out["segmentation"]

        boxes, labels, semantic = instance_targets(instances[0], self._classes[case_id])
        return {
            "image": image,
            "instances": instances[0],
            "seg": semantic,
            "boxes": boxes,
            "labels": labels,
        }

    def _object_voxel(self, case_id: str) -> list[int] | None:
        """A random stored voxel of a random object of ``case_id`` (None if it has none)."""
        objects = self._objects[case_id]
        if not objects:
            return None
        locations = objects[self._rng.integers(len(objects))]
        return [int(v) for v in locations[self._rng.integers(len(locations))]]

    def _open(self, case_id: str) -> tuple[Any, Any]:
        """The case's blosc2 arrays, opened once per process (handles are not shared)."""
        if os.getpid() != self._arrays_pid:
            self._arrays, self._arrays_pid = {}, os.getpid()
        if case_id not in self._arrays:
            data, seg, _ = self.store.load_case(case_id)
            self._arrays[case_id] = (data, seg)
        return self._arrays[case_id]

    @contextmanager
    def _own_global_rng(self) -> Iterator[None]:
        """Run with this sampler's state of the global numpy and torch generators."""
        outer_np, outer_torch = np.random.get_state(), torch.get_rng_state()
        np.random.set_state(self._np_state)
        torch.set_rng_state(self._torch_state)
        try:
            yield
        finally:
            self._np_state, self._torch_state = np.random.get_state(), torch.get_rng_state()
            np.random.set_state(outer_np)
            torch.set_rng_state(outer_torch)


def _object_locations(properties: dict[str, Any]) -> list[list[list[int]]]:
    """Sample voxels of each object with a class, one list per object."""
    locations = properties.get("object_locations", {})
    return [locations[i] for i in properties["instances"] if locations.get(i)]


def _crop_bbox(
    shape: Sequence[int],
    final: Sequence[int],
    crop: Sequence[int],
    centre: Sequence[int] | None,
    rng: np.random.Generator,
) -> list[list[int]]:
    """Where to crop, as half-open ``[[lo, hi], ...]`` per axis of the case.

    The final patch lies inside the case where the case is larger (so no patch is mostly
    padding), else the case lies inside it. Random patches are uniform over those places.
    A patch centred on ``centre`` puts it within the central half of the final patch (a
    random shift, so that objects are not always seen in the middle), then clips to the same
    range; ``centre`` stays inside the patch. The crop (``crop >= final``, same parity) is
    centred on the final patch, which the spatial transform cuts from the crop's centre.
    """
    bbox = []
    for size, f, c, axis in zip(shape, final, crop, range(len(shape)), strict=True):
        lowest, highest = min(0, size - f), max(0, size - f)
        if centre is None:
            lo = int(rng.integers(lowest, highest + 1))
        else:
            shift = int(rng.integers(-(f // 4), f // 4 + 1))
            lo = int(np.clip(centre[axis] - f // 2 + shift, lowest, highest))
        lo -= (c - f) // 2
        bbox.append([lo, lo + c])
    return bbox


def _collate(samples: list[dict[str, Any]], case_ids: list[str]) -> dict[str, Any]:
    """Stack per-sample tensors; boxes and labels stay lists (G differs per sample)."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "seg": torch.stack([s["seg"] for s in samples]),
        "instances": torch.stack([s["instances"] for s in samples]).to(torch.int16),
        "boxes": [s["boxes"] for s in samples],
        "labels": [s["labels"] for s in samples],
        "case_ids": case_ids,
    }


def _plan_patch(plan: Plan) -> list[int]:
    """The plan's patch, after checking that the sampler supports its dimensions."""
    if plan.dim not in (2, 3) or plan.data_dim not in (plan.dim, plan.dim + 1):
        raise NotImplementedError(
            f"plan {plan.name!r}: dim {plan.dim} on data_dim {plan.data_dim} is not supported; "
            "patches are either of the data's dimension or 2D slices of 3D data"
        )
    if len(plan.patch_size) != plan.dim:
        raise ValueError(
            f"plan {plan.name!r}: patch_size {plan.patch_size} has not {plan.dim} axes"
        )
    return list(plan.patch_size)


def make_sampler(
    store: CaseStore | Path | str,
    case_ids: Sequence[str],
    plan: Plan,
    seed: int = 0,
    augment: bool = True,
) -> PatchSampler:
    """A :class:`PatchSampler` for a plan: its patch and batch size, augmented or not."""
    store = store if isinstance(store, CaseStore) else CaseStore(store)
    patch = _plan_patch(plan)
    augmentation = TrainingAugmentation(patch) if augment else None
    return PatchSampler(store, case_ids, patch, plan.batch_size, augmentation, seed=seed)


class _BatchStream(torch.utils.data.IterableDataset):
    """Endless batches of a sampler; each worker process reseeds its copy.

    In a worker, per-sample boxes and labels are sent as one tensor each (see :func:`_pack`).
    """

    def __init__(self, sampler: PatchSampler, seed: int):
        super().__init__()
        self.sampler = sampler
        self.seed = seed

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        self.sampler.reseed([self.seed, info.id if info is not None else 0])
        if info is None:
            return iter(self.sampler)
        return (_pack(batch) for batch in self.sampler)


def _pack(batch: dict[str, Any]) -> dict[str, Any]:
    """Concatenate the B box and label tensors: every tensor crosses the process boundary
    as its own shared-memory file, and 2B small ones cost more than the images (measured
    here: 2D batch of 8 at 128x128, 20 ms in-process vs 35-43 ms through one worker)."""
    packed = {k: v for k, v in batch.items() if k not in ("boxes", "labels")}
    packed["counts"] = [len(b) for b in batch["labels"]]
    packed["boxes"] = torch.cat(batch["boxes"])
    packed["labels"] = torch.cat(batch["labels"])
    return packed


def _unpack(packed: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_pack` (boxes and labels become views of the sent tensors)."""
    batch = dict(packed)
    counts = batch.pop("counts")
    batch["boxes"] = list(torch.split(packed["boxes"], counts))
    batch["labels"] = list(torch.split(packed["labels"], counts))
    return batch


class BatchLoader:
    """An endless iterator of training batches, built in-process or by worker processes.

    With ``num_workers == 0`` batches are built on demand in the calling process. Otherwise
    ``num_workers`` forked processes build them ahead (``prefetch`` batches each) through a
    torch ``DataLoader``, which hands them out round-robin, worker 0 first.

    Determinism: worker ``w`` draws from the seed ``[seed, w]``, and in-process loading from
    ``[seed, 0]``, so a seed gives the same batches on every run for a fixed ``num_workers``,
    and ``num_workers`` 0 and 1 give the same batches. Different worker counts interleave
    different streams. Float results may differ in the last bits between the calling process
    and workers, which run torch with one thread.

    Call :meth:`close` (or use ``with``) to stop the workers; they also stop when the loader
    is garbage-collected.
    """

    def __init__(
        self,
        sampler: PatchSampler,
        num_workers: int = 0,
        seed: int = 0,
        prefetch: int = 2,
        pin_memory: bool = False,
    ):
        self.sampler = sampler
        self.num_workers = num_workers
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._closed = False
        if num_workers == 0:
            self._iterator = iter(_BatchStream(sampler, seed))
            return
        self._loader = torch.utils.data.DataLoader(
            _BatchStream(sampler, seed),
            batch_size=None,  # the sampler builds whole batches
            num_workers=num_workers,
            prefetch_factor=prefetch,
            pin_memory=pin_memory,
            multiprocessing_context="fork",  # no re-import of torch per worker (spawn: 3-7 s)
            # Its own generator, so that starting the workers draws nothing from the global one.
            generator=torch.Generator().manual_seed(seed),
        )

    def __iter__(self) -> BatchLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("this BatchLoader was closed; make a new one")
        if self.num_workers == 0:
            return next(self._iterator)
        if self._iterator is None:
            self._iterator = iter(self._loader)
        return _unpack(next(self._iterator))

    def close(self) -> None:
        """Stop the worker processes (no-op in-process); the loader cannot be used after."""
        iterator, self._iterator = self._iterator, None
        self._closed = True
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_train_loader(
    store: CaseStore | Path | str,
    case_ids: Sequence[str],
    plan: Plan,
    num_workers: int = 0,
    seed: int = 0,
    augment: bool = True,
    pin_memory: bool = False,
) -> BatchLoader:
    """Endless batches of a plan's patches from ``case_ids`` (the module docstring's dict).

    Args:
        store: a :class:`CaseStore` or the plan's preprocessed folder.
        case_ids: the cases to sample.
        plan: gives ``patch_size``, ``batch_size``, ``dim`` and ``data_dim``.
        num_workers: background processes (0: build batches in the calling process).
        seed: seeds case choice, patch placement and augmentation (see :class:`BatchLoader`).
        augment: False gives unaugmented patches (e.g. for validation losses); foreground
            oversampling stays on.
        pin_memory: pin batches for faster copies to a GPU.
    """
    sampler = make_sampler(store, case_ids, plan, seed=seed, augment=augment)
    return BatchLoader(sampler, num_workers=num_workers, seed=seed, pin_memory=pin_memory)
