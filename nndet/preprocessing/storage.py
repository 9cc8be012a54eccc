"""Preprocessed cases on disk: nnU-Net's blosc2 arrays, with JSON properties.

A plan's folder ``preprocessed/<plan>/`` holds per case::

    CASE.b2nd       float32 [C, *spatial]   normalised images, stored axes
    CASE_seg.b2nd   int16   [1, *spatial]   instance map: 0 background, 1..N object ids as in
                                            the raw map, -1 outside the nonzero crop mask
    CASE.json       properties (documentation/preprocessing.md), written last

The arrays are written by nnunetv2's ``nnUNetDatasetBlosc2.save_case`` (its chunk, block,
codec and filter choice) under temporary names and renamed into place; the JSON is written
last, so a case counts as finished exactly when its JSON exists. No pickle is kept.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

from nndet.data.io import load_json, save_json

TMP_PREFIX = ".tmp-"  # files under construction; never listed as cases, removed by clean_tmp


def blosc2_params(
    shape: tuple[int, ...], patch_size: list[int], itemsize: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """nnU-Net's blosc2 (blocks, chunks) for an array ``[C, *spatial]`` and a patch.

    ``comp_blosc2_params`` only takes 4D arrays; a 2D case ``[C, H, W]`` is treated as one
    slice ``[C, 1, H, W]`` (as nnU-Net stores 2D data) and the singleton axis dropped again.
    """
    if len(shape) == 4:
        return comp_blosc2_params(shape, tuple(patch_size), itemsize)
    blocks, chunks = comp_blosc2_params((shape[0], 1, *shape[1:]), tuple(patch_size), itemsize)
    return (blocks[0], *blocks[2:]), (chunks[0], *chunks[2:])


class CaseStore(nnUNetDatasetBlosc2):
    """The preprocessed cases of one plan: ``CaseStore(task/preprocessed/<plan>)``.

    It is an ``nnUNetDatasetBlosc2`` whose identifiers are the finished cases and whose
    properties are JSON; ``load_case`` returns ``(data, seg, properties)`` without nnU-Net's
    cascade slot.
    """

    def __init__(self, folder: Path | str, identifiers: list[str] | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        super().__init__(str(self.folder), identifiers)

    @staticmethod
    def get_identifiers(folder: str) -> list[str]:
        """Ids of finished cases in ``folder``: those with a JSON and both arrays."""
        names = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        ids = []
        for name in names:
            if name.startswith(TMP_PREFIX) or not name.endswith(".json"):
                continue
            case_id = name[: -len(".json")]
            if f"{case_id}.b2nd" in names and f"{case_id}_seg.b2nd" in names:
                ids.append(case_id)
        return sorted(ids)

    def case_ids(self) -> list[str]:
        """Ids of the finished cases now on disk, sorted."""
        return self.get_identifiers(str(self.folder))

    def is_finished(self, case_id: str) -> bool:
        return case_id in self.case_ids()

    def load_properties(self, case_id: str) -> dict[str, Any]:
        path = self.folder / f"{case_id}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no preprocessed case {case_id!r} in {self.folder}: run `nndet_prep` for its task"
            )
        return load_json(path)

    def load_case(self, case_id: str) -> tuple[Any, Any, dict[str, Any]]:  # type: ignore[override]
        """Open a case lazily.

        Returns:
            data: blosc2 NDArray float32 [C, *spatial] (memory-mapped, read on slicing).
            seg: blosc2 NDArray int16 [1, *spatial], the instance map.
            properties: the case's JSON properties.
        """
        properties = self.load_properties(case_id)
        data, seg = (
            blosc2.open(
                urlpath=str(self.folder / name),
                mode="r",
                dparams={"nthreads": 1},
                **self.mmap_kwargs,
            )
            for name in (f"{case_id}.b2nd", f"{case_id}_seg.b2nd")
        )
        return data, seg, properties

    def save_case(  # type: ignore[override]
        self,
        case_id: str,
        data: np.ndarray,
        seg: np.ndarray,
        properties: dict[str, Any],
        patch_size: list[int],
    ) -> None:
        """Write one case atomically; the JSON, written last, marks it finished.

        Args:
            case_id: name of the files.
            data: float32 [C, *spatial].
            seg: int [1, *spatial], ids below 32768 (stored as int16).
            properties: JSON-serialisable properties.
            patch_size: the plan's patch (2 or 3 entries) that sets blosc2 chunks and blocks.
        """
        data = np.asarray(data, dtype=np.float32)
        seg = np.asarray(seg)
        if seg.size and (seg.max() > np.iinfo(np.int16).max or seg.min() < -1):
            raise ValueError(f"case {case_id}: instance ids must lie in 1..32767 to store as int16")
        seg = seg.astype(np.int16, copy=False)

        # Unfinish first: a crash from here on leaves the case to be redone.
        (self.folder / f"{case_id}.json").unlink(missing_ok=True)

        tmp = self.folder / f"{TMP_PREFIX}{uuid.uuid4().hex}-{case_id}"
        blocks, chunks = blosc2_params(data.shape, patch_size, data.itemsize)
        blocks_seg, chunks_seg = blosc2_params(seg.shape, patch_size, seg.itemsize)
        try:
            nnUNetDatasetBlosc2.save_case(
                data, seg, {}, str(tmp), chunks, blocks, chunks_seg, blocks_seg
            )
            os.replace(f"{tmp}.b2nd", self.folder / f"{case_id}.b2nd")
            os.replace(f"{tmp}_seg.b2nd", self.folder / f"{case_id}_seg.b2nd")
        finally:
            for suffix in (".b2nd", "_seg.b2nd", ".pkl"):  # nnU-Net's pickle is not kept
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        save_json(properties, self.folder / f"{case_id}.json")

    def clean_tmp(self) -> list[str]:
        """Remove leftovers of interrupted writes; returns the removed file names.

        These are this module's ``.tmp-*`` arrays and the ``.CASE.json.*.tmp.json`` files of
        :func:`nndet.data.io.atomic_write`. Call it only while no other process writes here.
        """
        removed = []
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(TMP_PREFIX) or (
                path.name.startswith(".") and ".tmp" in path.name
            ):
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed
