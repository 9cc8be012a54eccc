"""Greedy NMS: invariants (hypothesis) and equality with a naive greedy reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nndet.boxes.nms import batched_nms, nms
from nndet.boxes.ops import box_iou


def naive_greedy_nms(boxes, scores, labels, threshold):
    """Reference: visit boxes by score (ties by index), keep unless a kept box overlaps."""
    order = sorted(range(len(boxes)), key=lambda i: (-float(scores[i]), i))
    iou = box_iou(boxes, boxes)
    kept = []
    for i in order:
        if all(labels[k] != labels[i] or iou[i, k] <= threshold for k in kept):
            kept.append(i)
    return kept


@st.composite
def detections(draw):
    dim = draw(st.sampled_from([2, 3]))
    n = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    # few distinct scores so that ties occur; boxes crowded so that chains of overlaps occur
    lo = torch.rand(n, dim, generator=g, dtype=torch.float64) * draw(st.sampled_from([5, 20, 60]))
    boxes = torch.cat([lo, lo + 0.5 + torch.rand(n, dim, generator=g, dtype=torch.float64) * 10], 1)
    scores = torch.randint(0, draw(st.sampled_from([3, 1000])), (n,), generator=g).double()
    labels = torch.randint(0, draw(st.sampled_from([1, 3])), (n,), generator=g)
    threshold = draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7]))
    block = draw(st.sampled_from([2, 7, 4096]))
    return boxes, scores, labels, threshold, block


@settings(max_examples=40, deadline=None)
@given(detections())
def test_nms_equals_naive_greedy(case):
    boxes, scores, labels, threshold, block = case
    expected = naive_greedy_nms(boxes, scores, torch.zeros_like(labels), threshold)
    assert nms(boxes, scores, threshold, block_size=block).tolist() == expected


@settings(max_examples=40, deadline=None)
@given(detections())
def test_batched_nms_equals_naive_greedy_per_class(case):
    boxes, scores, labels, threshold, block = case
    expected = naive_greedy_nms(boxes, scores, labels, threshold)
    assert batched_nms(boxes, scores, labels, threshold, block_size=block).tolist() == expected


@settings(max_examples=30, deadline=None)
@given(detections())
def test_nms_output_is_a_score_sorted_subset_without_overlaps(case):
    boxes, scores, _, threshold, block = case
    keep = nms(boxes, scores, threshold, block_size=block)
    assert len(set(keep.tolist())) == len(keep)
    assert (keep >= 0).all() and (keep < len(boxes)).all()
    assert (scores[keep].diff() <= 0).all()
    iou = box_iou(boxes[keep], boxes[keep]).fill_diagonal_(0)
    assert (iou <= threshold).all()


def test_nms_breaks_score_ties_by_index():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [1.0, 1, 11, 11]])
    scores = torch.tensor([0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [0]


def test_nms_threshold_is_strict():
    # IoU exactly 0.5: [0,2) and [0,1) along one axis of a 2D box
    boxes = torch.tensor([[0.0, 0, 2, 1], [0.0, 0, 1, 1]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_rejects_a_negative_threshold():
    with pytest.raises(ValueError, match="threshold"):
        nms(torch.zeros(2, 4), torch.zeros(2), -0.1)


def test_nms_of_nothing_is_empty():
    assert nms(torch.zeros(0, 6), torch.zeros(0), 0.5).shape == (0,)


def test_nms_handles_one_huge_box_among_small_ones():
    # the huge box sets the grid cell size; small boxes must still be compared correctly
    g = torch.Generator().manual_seed(0)
    lo = torch.rand(300, 3, generator=g) * 100
    boxes = torch.cat([lo, lo + 3], 1)
    boxes = torch.cat([boxes, torch.tensor([[0.0, 0, 0, 200, 200, 200]])])
    scores = torch.rand(301, generator=g)
    labels = torch.zeros(301, dtype=torch.long)
    assert nms(boxes, scores, 0.2).tolist() == naive_greedy_nms(boxes, scores, labels, 0.2)
