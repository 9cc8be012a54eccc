"""Training targets from an (augmented) instance map patch: boxes, labels and a semantic map.

Targets are derived *after* augmentation, from the transformed instance map, so that they
always describe what the network sees: an object cut by the patch border keeps the box of
its visible part, and an object that left the patch (or was rotated or scaled away) has no
box at all. Boxes follow nndet's convention (DESIGN.md): ``[lo_0, .., hi_0, ..]`` in voxel
coordinates of the patch, ``hi`` exclusive.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor


def class_lookup(instances: Mapping[str | int, int]) -> np.ndarray:
    """A table from instance id to class id, for :func:`instance_targets`.

    Args:
        instances: ``{id: class}`` of a case (ids as the strings of ``CASE.json`` or as ints),
            classes counted from 0.

    Returns:
        int64 ``[max_id + 1]``: entry ``i`` is the class of instance ``i``, -1 for the
        background (entry 0) and for ids without a class.
    """
    ids = [int(i) for i in instances]
    table = np.full(max(ids, default=0) + 1, -1, dtype=np.int64)
    for instance_id, cls in instances.items():
        table[int(instance_id)] = int(cls)
    table[0] = -1
    return table


def instance_targets(
    instance_map: np.ndarray | Tensor, classes: np.ndarray
) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes, labels and semantic map of one instance map patch.

    Args:
        instance_map: int ``[*spatial]`` (D = 2 or 3 axes); 0 background, ``1..N`` objects;
            negative values (outside the nonzero crop, padding) count as background.
        classes: int ``[M]`` from :func:`class_lookup`; ids at or beyond ``M`` or with
            class -1 are treated as background (no box, semantic 0).

    Returns:
        ``boxes`` float32 ``[G, 2*D]`` (one per instance id with a class that has at least one
        voxel in the patch, sorted by id), ``labels`` int64 ``[G]`` (class ids from 0) and
        ``semantic`` int64 ``[*spatial]`` (0 background, ``class + 1`` on object voxels).

    Notes:
        One pass over the voxels for the semantic map (a table lookup) and one for the boxes
        (``scipy.ndimage.find_objects``, as :func:`nndet.data.instances.instance_boxes`
        does); nothing loops over labels voxel-wise.
    """
    if isinstance(instance_map, Tensor):
        instance_map = instance_map.numpy()
    instance_map = np.asarray(instance_map)
    dim = instance_map.ndim

    # Ids beyond the table (never expected, but cheap to guard) map to "no class".
    known = np.maximum(instance_map, 0)
    if known.size and known.max() >= len(classes):
        known = np.where(known < len(classes), known, 0)
    semantic = classes[known] + 1

    # find_objects: one pass, slices indexed by id - 1 (None for absent ids).
    kept = [
        ([s.start for s in region] + [s.stop for s in region], classes[index + 1])
        for index, region in enumerate(ndimage.find_objects(known))
        if region is not None and classes[index + 1] >= 0
    ]
    boxes = torch.tensor([b for b, _ in kept], dtype=torch.float32).reshape(-1, 2 * dim)
    labels = torch.tensor([c for _, c in kept], dtype=torch.int64)
    return boxes, labels, torch.from_numpy(semantic)
