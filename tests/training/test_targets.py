"""Targets from instance map patches: boxes of the visible parts, labels, semantic map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nndet.data.instances import instance_boxes
from nndet.training.targets import class_lookup, instance_targets


def _random_map(shape: tuple[int, ...], num: int, seed: int) -> np.ndarray:
    """Rectangular objects 1..num at random places (later ones may cover earlier ones)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, dtype=np.int16)
    for i in range(1, num + 1):
        lo = [rng.integers(0, s - 2) for s in shape]
        hi = [rng.integers(a + 1, min(s, a + 8) + 1) for a, s in zip(lo, shape, strict=True)]
        out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = i
    return out


def test_class_lookup_maps_ids_and_marks_background_and_gaps():
    table = class_lookup({"1": 0, "3": 2})
    assert table.tolist() == [-1, 0, -1, 2]
    assert class_lookup({}).tolist() == [-1]


@pytest.mark.parametrize("shape", [(40, 36), (12, 20, 18)])
def test_boxes_labels_and_semantic_follow_the_map(shape):
    instance_map = _random_map(shape, num=6, seed=len(shape))
    classes = {str(i): i % 3 for i in range(1, 7)}
    boxes, labels, semantic = instance_targets(instance_map, class_lookup(classes))

    expected = instance_boxes(instance_map)
    assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
    assert boxes.tolist() == [list(map(float, expected[i])) for i in sorted(expected)]
    assert labels.tolist() == [i % 3 for i in sorted(expected)]
    assert semantic.dtype == torch.int64 and semantic.shape == shape
    oracle = np.where(instance_map > 0, instance_map % 3 + 1, 0)
    assert np.array_equal(semantic.numpy(), oracle)


def test_object_cut_by_the_border_keeps_its_visible_part():
    full = np.zeros((30, 30), dtype=np.int16)
    full[5:15, 20:28] = 1
    patch = full[8:24, 8:24]  # cuts rows 5..7 and columns 24..27 off the object
    boxes, labels, _ = instance_targets(patch, class_lookup({"1": 1}))
    assert boxes.tolist() == [[0.0, 12.0, 7.0, 16.0]]
    assert labels.tolist() == [1]


def test_vanished_object_is_dropped():
    full = np.zeros((20, 20, 20), dtype=np.int16)
    full[2:5, 2:5, 2:5] = 1
    full[12:16, 12:16, 12:16] = 2
    patch = full[10:, 10:, 10:]
    boxes, labels, semantic = instance_targets(patch, class_lookup({"1": 0, "2": 1}))
    assert boxes.tolist() == [[2.0, 2.0, 2.0, 6.0, 6.0, 6.0]]
    assert labels.tolist() == [1]
    assert set(np.unique(semantic.numpy())) == {0, 2}


@pytest.mark.parametrize("dim", [2, 3])
def test_empty_patch_gives_empty_targets(dim):
    boxes, labels, semantic = instance_targets(np.zeros((8,) * dim, np.int16), class_lookup({}))
    assert boxes.shape == (0, 2 * dim) and boxes.dtype == torch.float32
    assert labels.shape == (0,) and labels.dtype == torch.int64
    assert not semantic.any()


def test_outside_mask_and_unlisted_ids_are_background_without_box():
    patch = np.full((10, 10), -1, dtype=np.int16)
    patch[2:4, 2:4] = 1
    patch[6:8, 6:8] = 5  # no class: absent from the table and beyond its end
    boxes, labels, semantic = instance_targets(torch.from_numpy(patch), class_lookup({"1": 0}))
    assert boxes.tolist() == [[2.0, 2.0, 4.0, 4.0]]
    assert labels.tolist() == [0]
    assert semantic.min() == 0 and int(semantic.sum()) == 4
