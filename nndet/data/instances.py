"""Instance maps: boxes of objects, and the map <-> boxes bookkeeping."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def instance_boxes(instance_map: np.ndarray) -> dict[int, list[int]]:
    """Boxes of every instance id in a map, in nndet's box convention.

    Args:
        instance_map: int [*spatial], 0 is background, 1..N are objects (ids may have gaps).

    Returns:
        ``{id: [lo_0, .., lo_{D-1}, hi_0, .., hi_{D-1}]}`` with ``hi`` exclusive
        (``max index + 1``), for each id present in the map, sorted by id.
    """
    instance_map = np.asarray(instance_map)
    if instance_map.size == 0 or instance_map.max() <= 0:
        return {}
    labels = np.clip(instance_map, 0, None).astype(np.int64, copy=False)
    slices = ndimage.find_objects(labels)
    boxes = {}
    for index, slc in enumerate(slices):
        if slc is None:
            continue
        boxes[index + 1] = [s.start for s in slc] + [s.stop for s in slc]
    return boxes


def instance_sizes(instance_map: np.ndarray) -> dict[int, int]:
    """Voxel count of every instance id present in ``instance_map`` (background excluded)."""
    ids, counts = np.unique(np.asarray(instance_map), return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts, strict=True) if i > 0}
