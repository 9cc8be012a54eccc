"""Weighted box clustering: formula cases, invariants, and a naive reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nndet.boxes.nms import nms
from nndet.boxes.ops import box_iou
from nndet.boxes.wbc import (
    area_weights,
    cluster_boxes,
    patch_center_weights,
    weighted_box_clustering,
)


def naive_wbc(boxes, scores, labels, views, patch_weights, expected, threshold):
    """Reference written from the paper's description, one cluster at a time."""
    remaining = sorted(range(len(boxes)), key=lambda i: (-float(scores[i]), i))
    area = area_weights(boxes)
    out = []
    while remaining:
        top = remaining[0]
        members = [
            i
            for i in remaining
            if labels[i] == labels[top] and box_iou(boxes[[top]], boxes[[i]])[0, 0] > threshold
        ]
        remaining = [i for i in remaining if i not in members]
        f = torch.stack([box_iou(boxes[[top]], boxes[[i]])[0, 0] for i in members])
        w = f * area[members] * patch_weights[members]
        sw = scores[members] * w
        missing = max(0.0, float(expected[members].mean()) - len(set(views[members].tolist())))
        score = sw.sum() / (w.sum() + missing * w.mean())
        out.append(
            (float(score), (boxes[members] * sw[:, None]).sum(0) / sw.sum(), int(labels[top]))
        )
    return sorted(out, key=lambda r: -r[0])


@st.composite
def view_predictions(draw):
    dim = draw(st.sampled_from([2, 3]))
    n = draw(st.integers(1, 50))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    lo = torch.rand(n, dim, generator=g, dtype=torch.float64) * draw(st.sampled_from([5, 20]))
    boxes = torch.cat([lo, lo + 1 + torch.rand(n, dim, generator=g, dtype=torch.float64) * 8], 1)
    scores = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    labels = torch.randint(0, 2, (n,), generator=g)
    views = torch.randint(0, 4, (n,), generator=g)
    patch = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    expected = torch.randint(1, 7, (n,), generator=g).double()
    return boxes, scores, labels, views, patch, expected, draw(st.sampled_from([0.1, 0.3, 0.5]))


@settings(max_examples=30, deadline=None)
@given(view_predictions())
def test_wbc_equals_naive_reference(case):
    boxes, scores, labels, views, patch, expected, threshold = case
    out_boxes, out_scores, out_labels = weighted_box_clustering(
        boxes, scores, labels, views, patch, expected, threshold, block_size=8
    )
    ref = naive_wbc(boxes, scores, labels, views, patch, expected, threshold)
    assert torch.allclose(out_scores, torch.tensor([r[0] for r in ref], dtype=torch.float64))
    assert torch.allclose(out_boxes, torch.stack([r[1] for r in ref]))
    assert out_labels.tolist() == [r[2] for r in ref]


@settings(max_examples=30, deadline=None)
@given(view_predictions())
def test_wbc_tops_are_the_nms_kept_boxes(case):
    boxes, scores, labels, _, _, _, threshold = case
    cluster, tops, overlap = cluster_boxes(boxes, scores, torch.zeros_like(labels), threshold)
    assert tops.tolist() == nms(boxes, scores, threshold).tolist()
    assert (cluster[tops] == torch.arange(len(tops))).all()
    assert (overlap > threshold).all()


@pytest.mark.parametrize("expected", [1.0, 2.0, 4.5, 0.0])
def test_wbc_of_a_single_box_reduces_its_score_by_the_missing_views(expected):
    box = torch.tensor([[2.0, 3.0, 4.0, 10.0, 12.0, 9.0]])
    out_boxes, out_scores, out_labels = weighted_box_clustering(
        box, torch.tensor([0.8]), torch.tensor([1]), torch.tensor([0]), torch.tensor([0.3]),
        expected, 0.5,
    )  # fmt: skip
    missing = max(0.0, expected - 1)
    assert torch.allclose(out_boxes, box)
    assert out_scores.item() == pytest.approx(0.8 / (1 + missing))
    assert out_labels.tolist() == [1]


def test_wbc_of_identical_boxes_returns_that_box():
    box = torch.tensor([[1.0, 2.0, 5.0, 7.0]])
    boxes = box.repeat(4, 1)
    scores = torch.tensor([0.9, 0.7, 0.8, 0.6])
    out_boxes, out_scores, _ = weighted_box_clustering(
        boxes, scores, torch.zeros(4, dtype=torch.long), torch.arange(4), torch.ones(4), 4.0, 0.5
    )
    assert torch.allclose(out_boxes, box)
    assert out_scores.item() == pytest.approx(scores.mean().item())


def test_wbc_hand_computed_two_boxes():
    # top [0,4)^2 score 0.8, second [0,4)x[1,4) score 0.4: IoU 0.75, areas 16 and 12
    boxes = torch.tensor([[0.0, 0, 4, 4], [0.0, 1, 4, 4]], dtype=torch.float64)
    scores = torch.tensor([0.8, 0.4], dtype=torch.float64)
    w = torch.tensor([1.0 * 4.0, 0.75 * math.sqrt(12)], dtype=torch.float64)
    out_boxes, out_scores, _ = weighted_box_clustering(
        boxes, scores, torch.zeros(2, dtype=torch.long), torch.tensor([0, 0]),
        torch.ones(2, dtype=torch.float64), 3.0, 0.5,
    )  # fmt: skip
    # one distinct view of 3 expected: 2 missing
    expected_score = (scores * w).sum() / (w.sum() + 2 * w.mean())
    expected_box = (boxes * (scores * w)[:, None]).sum(0) / (scores * w).sum()
    assert out_scores.item() == pytest.approx(expected_score.item())
    assert torch.allclose(out_boxes[0], expected_box)


def test_wbc_keeps_classes_apart():
    boxes = torch.tensor([[0.0, 0, 4, 4], [0.0, 0, 4, 4]])
    _, scores, labels = weighted_box_clustering(
        boxes, torch.tensor([0.9, 0.5]), torch.tensor([0, 1]), torch.tensor([0, 0]),
        torch.ones(2), 1.0, 0.5,
    )  # fmt: skip
    assert labels.tolist() == [0, 1] and scores.tolist() == pytest.approx([0.9, 0.5])


def test_patch_center_weights_hand_computed():
    tile = torch.tensor([[0.0, 0.0, 64.0, 128.0]])  # sigma = 8, 16 with scale 1/8
    boxes = torch.tensor([[30.0, 62.0, 34.0, 66.0], [38.0, 62.0, 42.0, 66.0]])  # centres dz 0, 1
    weights = patch_center_weights(boxes, tile)
    assert weights.tolist() == pytest.approx([1.0, math.exp(-0.5)])


def test_area_weights_modes():
    boxes = torch.tensor([[0.0, 0, 0, 2, 2, 4]])
    assert area_weights(boxes, "sqrt").item() == pytest.approx(4.0)
    assert area_weights(boxes, "volume").item() == pytest.approx(16.0)
    assert area_weights(boxes, "log").item() == pytest.approx(math.log(17))
    with pytest.raises(ValueError, match="area weighting"):
        area_weights(boxes, "cube")


def test_wbc_of_nothing_is_empty():
    boxes, scores, labels = weighted_box_clustering(
        torch.zeros(0, 6), torch.zeros(0), torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long), torch.zeros(0), 4.0, 0.5,
    )  # fmt: skip
    assert boxes.shape == (0, 6) and scores.shape == (0,) and labels.shape == (0,)
