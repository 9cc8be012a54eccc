"""Greedy non-maximum suppression in 2D and 3D, class-agnostic and class-wise.

Semantics are those of the usual greedy NMS: boxes are visited by descending score, and a box
is kept unless a kept box of the same class overlaps it with IoU strictly greater than the
threshold. Ties in score are broken by index: of two equal scores the box that comes first
in the input is visited first (a stable sort).

The implementation never builds an N x N matrix and has no Python loop per box: boxes are
taken in score order in blocks; each block is checked against the boxes kept so far through a
spatial grid (:mod:`nndet.boxes.pairs`), and greedy inside the block is resolved by iterated
suppression on the block's sparse overlap graph, which reaches exactly the greedy result
after as many rounds as the longest chain of suppressions (at most the block size).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nndet.boxes.ops import box_area
from nndet.boxes.pairs import BoxGrid, SortedKeys, candidate_pairs, pair_iou

DEFAULT_BLOCK_SIZE = 4096


def nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float, block_size: int = DEFAULT_BLOCK_SIZE
) -> Tensor:
    """Class-agnostic greedy NMS.

    Args:
        boxes: float [N, 2*D] in corner format.
        scores: float [N].
        iou_threshold: a box is suppressed by a kept box with IoU > this.
        block_size: boxes resolved together; bounds memory, not the result.

    Returns:
        long [K]: indices of the kept boxes, sorted by descending score (ties by index).
    """
    labels = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    return batched_nms(boxes, scores, labels, iou_threshold, block_size)


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou_threshold: float,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Tensor:
    """Class-wise greedy NMS: boxes of different labels never suppress each other.

    Args:
        boxes: float [N, 2*D] in corner format.
        scores: float [N].
        labels: int [N] class of each box.
        iou_threshold: a box is suppressed by a kept box of its class with IoU > this.
        block_size: boxes resolved together; bounds memory, not the result.

    Returns:
        long [K]: indices of the kept boxes, sorted by descending score (ties by index).
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = greedy_keep_sorted(boxes[order], labels[order], iou_threshold, block_size)
    return order[keep]


def greedy_keep_sorted(
    boxes: Tensor, labels: Tensor, iou_threshold: float, block_size: int = DEFAULT_BLOCK_SIZE
) -> Tensor:
    """Greedy NMS of boxes already sorted by descending score.

    Args:
        boxes: float [N, 2*D] in corner format, in visiting order.
        labels: int [N] classes.
        iou_threshold: suppress at IoU > this.
        block_size: boxes per block.

    Returns:
        bool [N]: which boxes are kept.
    """
    if iou_threshold < 0:
        raise ValueError(f"NMS needs an IoU threshold >= 0, got {iou_threshold}")
    if iou_threshold >= 1.0:  # IoU never exceeds 1: nothing is suppressed
        return torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    groups = torch.unique(labels, return_inverse=True)[1]
    grid = BoxGrid(boxes, iou_threshold)
    keys = grid.keys(boxes, groups)
    areas = box_area(boxes)
    empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
    kept = SortedKeys(empty, empty)
    keep = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)

    for first in range(0, len(boxes), block_size):
        block = slice(first, min(first + block_size, len(boxes)))
        block_keys = keys[block]

        # boxes overlapped by a box kept in an earlier block are gone
        alive = torch.ones(len(block_keys), dtype=torch.bool, device=boxes.device)
        for query, ref in candidate_pairs(grid, block_keys, kept):
            hit = pair_iou(boxes, areas, query + first, ref) > iou_threshold
            alive[query[hit]] = False

        block_keep = _resolve_block(grid, boxes, areas, first, block_keys, alive, iou_threshold)
        new = torch.nonzero(block_keep).flatten()
        keep[first + new] = True
        kept = kept.add(block_keys[new], first + new)
    return keep


def _resolve_block(
    grid: BoxGrid,
    boxes: Tensor,
    areas: Tensor,
    first: int,
    keys: Tensor,
    alive: Tensor,
    iou_threshold: float,
) -> Tensor:
    """Greedy inside one block of score-sorted boxes.

    Args:
        boxes: float [N, 2*D] all boxes in visiting order; areas: float [N] their areas.
        first: position of the block's first box. keys: long [B] the block's cell keys.
        alive: bool [B], boxes of the block not yet suppressed by earlier blocks.

    Returns:
        bool [B]: kept boxes.
    """
    positions = torch.nonzero(alive).flatten()
    sources, targets = [], []
    for query, ref in candidate_pairs(
        grid, keys[positions], SortedKeys(keys[positions], positions)
    ):
        query = positions[query]
        earlier = ref < query
        query, ref = query[earlier], ref[earlier]
        hit = pair_iou(boxes, areas, query + first, ref + first) > iou_threshold
        sources.append(ref[hit])
        targets.append(query[hit])
    if not sources or sum(len(s) for s in sources) == 0:
        return alive
    sources, targets = torch.cat(sources), torch.cat(targets)

    # Iterated suppression: a box is kept iff no earlier kept box overlaps it. Starting from
    # "all alive kept", after round r the first r boxes of every suppression chain are final,
    # so the fixed point is the greedy result.
    keep = alive.clone()
    while True:
        suppressed = torch.zeros_like(keep)
        suppressed[targets[keep[sources]]] = True
        new_keep = alive & ~suppressed
        if torch.equal(new_keep, keep):
            return keep
        keep = new_keep
