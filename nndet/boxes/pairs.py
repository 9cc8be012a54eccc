"""Finding pairs of boxes that may overlap, without an N x M matrix.

Boxes are bucketed into a uniform grid by their lower corner. Two boxes with IoU > t overlap
by more than ``t * max(e_i, e_j)`` on every axis (``e``: extents; IoU is at most the overlap
fraction of either box on any one axis), so their lower corners are closer than
``(1 - t) * E`` on every axis, E the largest extent of all boxes. With cells of that size the
cells of such a pair differ by at most one per axis: the candidates of a box are the boxes in
the 3^D cells around its own. NMS and weighted box clustering use this to compare each box
only with its spatial neighbours.

Notes:
    The pruning is only as good as the cell size: one very large box makes every cell large
    and the search degrades towards all pairs (still in bounded memory, chunk by chunk).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import Tensor

from nndet.boxes.ops import box_dim

# Grid cells per axis are capped so that group * cells fits into int64 keys.
_MAX_CELLS_PER_AXIS = 1 << 16


class BoxGrid:
    """A uniform grid over a set of boxes, giving each box an integer cell key.

    Args:
        boxes: float [N, 2*D], every box that will be looked up (the grid's cell size must
            cover the largest of them).
        iou_threshold: only pairs with IoU > this are needed (0: every overlapping pair).

    Group keys (classes for class-wise NMS) are added by :meth:`keys`, so boxes of different
    groups never pair.
    """

    def __init__(self, boxes: Tensor, iou_threshold: float = 0.0) -> None:
        d = box_dim(boxes)
        lo = boxes[:, :d].double()
        extent = (boxes[:, d:] - boxes[:, :d]).double()
        self.dim = d
        self.origin = lo.min(dim=0).values if len(boxes) else lo.new_zeros(d)
        span = (lo.max(dim=0).values - self.origin) if len(boxes) else lo.new_zeros(d)

        # float64 and a relative margin keep "closer than one cell" true after rounding
        largest = extent.max(dim=0).values if len(boxes) else lo.new_ones(d)
        cell = largest * (1.0 - min(max(iou_threshold, 0.0), 0.999))
        cell = torch.maximum(cell, span / (_MAX_CELLS_PER_AXIS - 4)) * (1 + 1e-6)
        self.cell = cell.clamp(min=1e-9)

        # one empty cell of margin on both sides so neighbour keys never wrap to another row
        cells = torch.floor(span / self.cell).long() + 3
        strides = [1] * d
        for axis in range(d - 2, -1, -1):
            strides[axis] = strides[axis + 1] * int(cells[axis + 1])
        self.strides = torch.tensor(strides, dtype=torch.long, device=boxes.device)
        self.group_stride = strides[0] * int(cells[0])

        # the last axis has stride 1, so its three neighbour cells are one key range: look up
        # 3^(D-1) ranges [key + offset - 1, key + offset + 1] instead of 3^D cells
        offsets = list(itertools.product((-1, 0, 1), repeat=d - 1))
        offsets = torch.tensor(offsets, dtype=torch.long, device=boxes.device)
        self.neighbour_offsets = (offsets * self.strides[:-1]).sum(dim=1)  # [3^(D-1)]

    def keys(self, boxes: Tensor, groups: Tensor | None = None) -> Tensor:
        """Cell key (long ``[N]``) of each box's lower corner, offset by its group."""
        cell_index = torch.floor((boxes[:, : self.dim].double() - self.origin) / self.cell)
        keys = ((cell_index.long() + 1) * self.strides).sum(dim=1)
        if groups is not None:
            keys = keys + groups.long() * self.group_stride
        return keys


class SortedKeys:
    """Reference boxes sorted by cell key, for range look-ups.

    Args:
        keys: long [M] cell keys of the reference boxes.
        index: long [M] the id each reference box stands for (returned in pairs).
    """

    def __init__(self, keys: Tensor, index: Tensor) -> None:
        self.keys, order = keys.sort()
        self.index = index[order]

    def __len__(self) -> int:
        return self.keys.numel()

    def add(self, keys: Tensor, index: Tensor) -> SortedKeys:
        """A new :class:`SortedKeys` holding these boxes and the new ones."""
        return SortedKeys(torch.cat([self.keys, keys]), torch.cat([self.index, index]))


def candidate_pairs(
    grid: BoxGrid, query_keys: Tensor, reference: SortedKeys, max_pairs: int = 1 << 20
) -> Iterator[tuple[Tensor, Tensor]]:
    """All (query, reference) pairs whose cells are neighbours, in chunks.

    Args:
        grid: the grid both key sets were made with.
        query_keys: long [Q] cell keys of the query boxes.
        reference: the reference boxes, sorted by key.
        max_pairs: pairs per chunk (a query with more neighbours than this is one chunk).

    Yields:
        ``(query_pos, reference_id)``: long [P] positions into the query boxes and the ids
        (``reference.index``) of their candidate partners. Every pair with IoU above the
        grid's threshold is among
        them, and most candidates do not: check them by IoU.
    """
    if len(query_keys) == 0 or len(reference) == 0:
        return
    neighbours = query_keys[:, None] + grid.neighbour_offsets[None, :]  # [Q, 3^(D-1)]
    start = torch.searchsorted(reference.keys, neighbours - 1)
    count = torch.searchsorted(reference.keys, neighbours + 1, right=True) - start
    cumulative = count.sum(dim=1).cumsum(dim=0)  # [Q]

    num_query, first = len(query_keys), 0
    while first < num_query:
        done = int(cumulative[first - 1]) if first > 0 else 0
        last = int(torch.searchsorted(cumulative, done + max_pairs, right=True))
        last = min(max(last, first + 1), num_query)
        yield _expand(start[first:last], count[first:last], reference, first)
        first = last


def _expand(start: Tensor, count: Tensor, reference: SortedKeys, offset: int):
    """Pairs from ranges: query ``q`` pairs with ``reference[start[q, j] : +count[q, j]]``."""
    width = start.shape[1]
    start, count = start.flatten(), count.flatten()
    segment = torch.repeat_interleave(torch.arange(len(count), device=count.device), count)
    first_of_segment = count.cumsum(dim=0) - count
    within = torch.arange(len(segment), device=count.device) - first_of_segment[segment]
    reference_id = reference.index[start[segment] + within]
    return segment // width + offset, reference_id


def pair_iou(boxes: Tensor, areas: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """IoU of the box pairs ``(boxes[first[p]], boxes[second[p]])``.

    Args:
        boxes: float [N, 2*D] in corner format. areas: float [N], ``box_area(boxes)``.
        first, second: long [P] indices into ``boxes``.

    Returns:
        float [P]; exactly symmetric in ``first`` and ``second``, so that NMS and clustering
        take the same decision for a pair whichever way round they meet it.
    """
    d = box_dim(boxes)
    a, b = boxes[first], boxes[second]
    inter = (torch.minimum(a[:, d:], b[:, d:]) - torch.maximum(a[:, :d], b[:, :d])).clamp_(min=0)
    inter = inter.prod(dim=1)
    return inter / (areas[first] + areas[second] - inter).clamp_(min=1e-9)
