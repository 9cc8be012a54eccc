"""Box operations: invariants (hypothesis) and hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nndet.boxes.ops import (
    box_area,
    box_center,
    box_giou,
    box_iou,
    box_to_center_size,
    center_size_to_box,
    clip_boxes,
    giou_loss,
    paired_box_iou,
    remove_small_boxes,
)


def _boxes(draw, dim: int, max_boxes: int):
    n = draw(st.integers(1, max_boxes))
    coord = st.floats(0, 50, allow_nan=False, width=32)
    size = st.floats(0.5, 20, allow_nan=False, width=32)
    rows = st.lists(st.tuples(*([coord] * dim + [size] * dim)), min_size=n, max_size=n)
    values = torch.tensor(draw(rows), dtype=torch.float64)
    return torch.cat([values[:, :dim], values[:, :dim] + values[:, dim:]], dim=1)


@st.composite
def box_sets(draw, max_boxes: int = 12):
    return _boxes(draw, draw(st.sampled_from([2, 3])), max_boxes)


@st.composite
def box_set_pairs(draw, max_boxes: int = 12):
    dim = draw(st.sampled_from([2, 3]))
    return _boxes(draw, dim, max_boxes), _boxes(draw, dim, max_boxes)


@settings(max_examples=60, deadline=None)
@given(box_set_pairs())
def test_iou_is_symmetric_and_in_unit_interval(pair):
    a, b = pair
    iou = box_iou(a, b)
    assert torch.allclose(iou, box_iou(b, a).T)
    assert (iou >= 0).all() and (iou <= 1 + 1e-12).all()


@settings(max_examples=60, deadline=None)
@given(box_sets())
def test_iou_of_a_box_with_itself_is_one(a):
    assert torch.allclose(box_iou(a, a).diagonal(), torch.ones(len(a), dtype=a.dtype))
    assert torch.allclose(paired_box_iou(a, a), torch.ones(len(a), dtype=a.dtype))


@settings(max_examples=60, deadline=None)
@given(box_sets())
def test_paired_iou_matches_the_diagonal_of_the_matrix(a):
    b = a.flip(0)
    assert torch.allclose(paired_box_iou(a, b), box_iou(a, b).diagonal())
    assert torch.equal(paired_box_iou(a, b), paired_box_iou(b, a))


@settings(max_examples=60, deadline=None)
@given(box_sets())
def test_giou_is_at_most_iou_and_above_minus_one(a):
    b = a.flip(0) + 3
    giou = box_giou(a, b)
    assert (giou <= paired_box_iou(a, b) + 1e-9).all() and (giou >= -1).all()


def test_giou_hand_computed_2d():
    # [0,2)x[0,2) and [1,3)x[1,3): inter 1, union 7, hull 9 -> 1/7 - 2/9
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    assert box_giou(a, b).item() == pytest.approx(1 / 7 - 2 / 9)


def test_giou_hand_computed_3d_disjoint():
    # unit cubes at 0 and 2 along axis 0: iou 0, union 2, hull 3 -> -1/3
    a = torch.tensor([[0.0, 0, 0, 1, 1, 1]])
    b = torch.tensor([[2.0, 0, 0, 3, 1, 1]])
    assert box_giou(a, b).item() == pytest.approx(-1 / 3)
    assert giou_loss(a, b).item() == pytest.approx(4 / 3)


def test_giou_loss_reductions():
    a = torch.tensor([[0.0, 0, 2, 2], [0.0, 0, 1, 1]])
    b = torch.tensor([[0.0, 0, 2, 2], [0.0, 0, 2, 1]])
    assert giou_loss(a, b, "none").tolist() == pytest.approx([0.0, 0.5])
    assert giou_loss(a, b, "mean").item() == pytest.approx(0.25)
    assert giou_loss(a[:0], b[:0], "mean").item() == 0


def test_area_uses_exclusive_upper_corner():
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0, 6.0, 7.0]])
    assert box_area(boxes).item() == 3 * 4 * 4


def test_clip_boxes_to_shape():
    boxes = torch.tensor([[-2.0, 3.0, 5.0, 12.0], [1.0, 1.0, 2.0, 2.0]])
    clipped = clip_boxes(boxes, (4, 10))
    assert clipped.tolist() == [[0.0, 3.0, 4.0, 10.0], [1.0, 1.0, 2.0, 2.0]]


def test_remove_small_boxes_requires_every_side():
    boxes = torch.tensor([[0.0, 0, 0, 3, 3, 3], [0.0, 0, 0, 3, 1, 3], [0.0, 0, 0, 2, 2, 2]])
    assert remove_small_boxes(boxes, 2.0).tolist() == [0, 2]


@settings(max_examples=40, deadline=None)
@given(box_sets())
def test_center_size_round_trip(a):
    cs = box_to_center_size(a)
    d = a.shape[1] // 2
    assert torch.allclose(cs[:, :d], box_center(a))
    assert torch.allclose(center_size_to_box(cs), a)


def test_center_size_hand_computed():
    cs = box_to_center_size(torch.tensor([[0.0, 2.0, 4.0, 8.0]]))
    assert cs.tolist() == [[2.0, 5.0, 4.0, 6.0]]
    assert math.isclose(center_size_to_box(cs)[0, 3].item(), 8.0)


def test_giou_loss_has_finite_gradients_for_identical_and_disjoint_boxes():
    pred = torch.tensor([[0.0, 0, 0, 2, 2, 2], [5.0, 5, 5, 6, 6, 6]], requires_grad=True)
    target = torch.tensor([[0.0, 0, 0, 2, 2, 2], [0.0, 0, 0, 1, 1, 1]])
    giou_loss(pred, target).backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[1].abs().sum() > 0  # disjoint boxes are still pulled together
