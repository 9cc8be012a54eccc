"""The objects of a stored instance map: boxes, sample voxels, and what resampling broke."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import cc3d
import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

# Voxels kept per object for the training loader's foreground sampling; nnU-Net keeps up to
# 10k per class, a few dozen per object are plenty to centre patches on each object.
LOCATIONS_PER_OBJECT = 50


@dataclass
class StoredObjects:
    """Objects of one stored case, in id order.

    ``boxes`` are int ``[lo.., hi..]`` per object in nndet's convention (stored axes);
    ``locations`` up to :data:`LOCATIONS_PER_OBJECT` voxel indices ``[z, y, x]`` per object.
    """

    ids: list[int] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    boxes: list[list[int]] = field(default_factory=list)
    locations: dict[str, list[list[int]]] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)  # objects no voxel of survived
    split: dict[int, int] = field(default_factory=dict)  # id -> components after resampling
    unlisted: list[int] = field(default_factory=list)  # ids in the map without a class


def _components(mask: np.ndarray) -> int:
    """Connected components of a binary mask, counting diagonal neighbours (26 / 8)."""
    connectivity = 26 if mask.ndim == 3 else 8
    return int(cc3d.connected_components(mask, connectivity=connectivity, return_N=True)[1])


def collect_objects(
    case_id: str,
    seg: np.ndarray,
    instances: dict[int, int],
    raw_seg: np.ndarray | None = None,
) -> StoredObjects:
    """Boxes, sample voxels and lost/split objects of a stored instance map.

    Ids present in ``seg`` but missing from ``instances`` are set to background in place
    (with a warning), since no class can be given to them.

    Args:
        case_id: for the log messages.
        seg: int [*spatial] stored instance map (-1 outside the crop mask), changed in place.
        instances: ``{id: class}`` of the raw case.
        raw_seg: int [*spatial] the cropped raw map; used only to tell whether an object split
            after resampling was already in several pieces before.
    """
    slices = ndimage.find_objects(seg) if seg.size else []
    present = {i + 1: s for i, s in enumerate(slices) if s is not None}
    objects = StoredObjects()

    objects.unlisted = sorted(set(present) - set(instances))
    for obj_id in objects.unlisted:
        logger.warning(
            "case %s: id %d is in the label map but not in its json; dropped", case_id, obj_id
        )
        region = present.pop(obj_id)
        seg[region][seg[region] == obj_id] = 0

    rng = np.random.default_rng(zlib.crc32(case_id.encode()))  # same samples on every run
    for obj_id in sorted(instances):
        if obj_id not in present:
            objects.lost.append(obj_id)
            if raw_seg is not None and not np.any(raw_seg == obj_id):
                logger.warning("case %s: object %d is not in its label map", case_id, obj_id)
            else:
                logger.warning("case %s: object %d vanished in resampling", case_id, obj_id)
            continue
        region = present[obj_id]
        mask = seg[region] == obj_id
        lo = [s.start for s in region]
        objects.ids.append(obj_id)
        objects.classes.append(int(instances[obj_id]))
        objects.boxes.append(lo + [s.stop for s in region])

        voxels = np.argwhere(mask)
        pick = rng.choice(len(voxels), min(len(voxels), LOCATIONS_PER_OBJECT), replace=False)
        objects.locations[str(obj_id)] = (voxels[np.sort(pick)] + lo).tolist()

        pieces = _components(mask)
        if pieces > 1 and (raw_seg is None or pieces > _raw_components(raw_seg, obj_id)):
            objects.split[obj_id] = pieces
            logger.warning(
                "case %s: object %d split into %d pieces in preprocessing", case_id, obj_id, pieces
            )
    return objects


def _raw_components(raw_seg: np.ndarray, obj_id: int) -> int:
    """Components of one object in the raw map (only called for objects found split)."""
    region = ndimage.find_objects((raw_seg == obj_id).astype(np.uint8))
    if not region or region[0] is None:
        return 0
    return _components(raw_seg[region[0]] == obj_id)
