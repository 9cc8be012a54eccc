"""Tile grid, tile reading, mirroring and box flipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_fakes import BlobModel, paint

from nndet.inference.sliding_window import (
    flip_boxes,
    iter_tile_batches,
    make_tile_grid,
    mirror_combinations,
    read_tile,
)


@pytest.mark.parametrize(
    ("shape", "tile"),
    [((100,), (32,)), ((64, 64), (64, 32)), ((37, 90, 129), (16, 32, 64)), ((5, 40), (1, 16))],
)
def test_tile_grid_covers_every_voxel_and_stays_inside(shape, tile):
    grid = make_tile_grid(shape, tile, overlap=0.5)
    covered = np.zeros(shape, dtype=np.int64)
    for start in grid.starts().tolist():
        assert all(0 <= s <= n - t for s, n, t in zip(start, shape, tile, strict=True))
        covered[tuple(slice(s, s + t) for s, t in zip(start, tile, strict=True))] += 1
    assert covered.min() >= 1


def test_tile_grid_neighbours_overlap_by_at_least_half():
    grid = make_tile_grid((200,), (64,), overlap=0.5)
    steps = np.diff(grid.axis_starts[0])
    assert len(steps) > 0
    assert steps.max() <= 32


def test_slice_axis_of_a_2d_plan_has_every_slice_once():
    grid = make_tile_grid((7, 40, 40), (1, 32, 32))
    assert grid.axis_starts[0] == tuple(range(7))


def test_small_case_is_padded_into_one_centred_tile():
    data = np.arange(1, 1 + 10 * 20, dtype=np.float32).reshape(1, 10, 20)
    grid = make_tile_grid((10, 20), (16, 32))
    assert grid.num_tiles == 1
    start = grid.starts()[0].tolist()
    assert start == [-3, -6]

    tile = read_tile(data, start, (16, 32))
    assert tile.shape == (1, 16, 32)
    np.testing.assert_array_equal(tile[0, 3:13, 6:26], data[0])
    assert tile.sum() == data.sum()


def test_tiles_are_read_lazily_in_batches():
    class CountingArray:
        def __init__(self, array):
            self.array, self.shape, self.read = array, array.shape, []

        def __getitem__(self, index):
            part = self.array[index]
            self.read.append(part.size)
            return part

    data = CountingArray(np.random.default_rng(0).random((1, 64, 96), dtype=np.float32))
    grid = make_tile_grid((64, 96), (32, 32))
    batches = list(iter_tile_batches(data, grid, batch_size=4))
    assert sum(len(i) for i, _ in batches) == grid.num_tiles
    assert max(b.shape[0] for _, b in batches) == 4
    assert max(data.read) == 32 * 32  # never more than one tile at a time


def test_mirror_combinations_are_all_subsets_identity_first():
    mirrors = mirror_combinations(3)
    assert mirrors[0] == ()
    assert len(mirrors) == 8 == len(set(mirrors))
    assert mirror_combinations(3, enabled=False) == [()]


@pytest.mark.parametrize("axes", [(0,), (1,), (0, 1), (0, 1, 2), (2,)])
def test_flipped_detection_flips_back_onto_the_blob(axes):
    size = [12, 16, 20][: max(max(axes) + 1, 2)]
    box = [1, 3, 2][: len(size)] + [5, 9, 11][: len(size)]
    image = torch.from_numpy(paint(size, [box]))[None]
    model = BlobModel()
    flipped = model.predict(image.flip([a + 2 for a in axes]))[0]["boxes"]
    restored = flip_boxes(flipped, axes, size)
    assert restored.tolist() == [[float(c) for c in box]]
    assert torch.equal(flip_boxes(restored, axes, size), flipped)
