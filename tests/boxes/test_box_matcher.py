"""ATSS and IoU matchers on hand-made anchors and gt boxes."""

from __future__ import annotations

import torch

from nndet.boxes.anchors import AnchorGenerator
from nndet.boxes.matcher import BACKGROUND, IGNORE, ATSSMatcher, IoUMatcher
from nndet.boxes.ops import box_iou


def _line_anchors() -> torch.Tensor:
    # 1D-like row of 2D anchors of size 4 centred at x = 2, 4, 6, ..., 20 (y fixed)
    centres = torch.arange(1, 11, dtype=torch.float32) * 2
    return torch.stack([centres - 2, torch.zeros(10), centres + 2, torch.full((10,), 4.0)], 1)


def test_atss_hand_computed_single_level():
    anchors = _line_anchors()
    gt = torch.tensor([[6.0, 0.0, 10.0, 4.0]])  # centre x = 8: anchors at 6, 8, 10 closest
    # 4 candidates by centre distance: x = 8 (iou 1), 6 and 10 (iou 1/3), then 4 (iou 0)
    # mean = (1 + 1/3 + 1/3 + 0) / 4 = 5/12; unbiased std = 0.4410 -> threshold 0.8577
    matches = ATSSMatcher(num_candidates=4)(gt, anchors, [10])
    expected = torch.full((10,), BACKGROUND)
    expected[3] = 0
    assert torch.equal(matches, expected)


def _naive_atss(gts, anchors, per_level, k):
    """Reference ATSS written as loops over gts, levels and anchors."""
    result = [BACKGROUND] * len(anchors)
    best = [-1.0] * len(anchors)
    iou = box_iou(gts, anchors)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    for g, gt in enumerate(gts):
        centre = (gt[:2] + gt[2:]) / 2
        candidates, start = [], 0
        for count in per_level:
            dist = [float(torch.linalg.norm(centres[start + i] - centre)) for i in range(count)]
            order = sorted(range(count), key=lambda i: dist[i])[:k]
            candidates += [start + i for i in order]
            start += count
        values = torch.tensor([float(iou[g, c]) for c in candidates])
        threshold = float(values.mean() + values.std())
        for c in candidates:
            if iou[g, c] >= threshold and iou[g, c] > 0 and iou[g, c] > best[c]:
                best[c], result[c] = float(iou[g, c]), g
    return result


def test_atss_equals_a_naive_reference_over_two_levels():
    gen = AnchorGenerator(
        sizes=[[[4.0, 4.0], [4.0, 8.0]], [[8.0, 8.0], [8.0, 16.0]]], strides=[[4, 4], [8, 8]]
    )
    anchors = torch.cat(gen([(8, 8), (4, 4)]))
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        lo = torch.rand(3, 2, generator=g) * 24
        gts = torch.cat([lo, lo + 2 + torch.rand(3, 2, generator=g) * 10], 1)
        matches = ATSSMatcher(num_candidates=3)(gts, anchors, [128, 32])
        assert matches.tolist() == _naive_atss(gts, anchors, [128, 32], 3)


def test_atss_resolves_shared_anchors_by_highest_iou():
    anchors = _line_anchors()
    gts = torch.tensor([[6.0, 0.0, 10.0, 4.0], [7.0, 0.0, 11.0, 4.0]])
    matches = ATSSMatcher(num_candidates=4)(gts, anchors, [10])
    iou = box_iou(gts, anchors)
    for n in torch.nonzero(matches >= 0).flatten():
        assert iou[matches[n], n] == iou[:, n].max()


def test_atss_without_gt_is_all_background():
    matches = ATSSMatcher()(torch.zeros(0, 4), _line_anchors(), [10])
    assert (matches == BACKGROUND).all() and matches.dtype == torch.long


def test_atss_center_in_gt_drops_anchors_outside():
    anchors = _line_anchors()  # centres at y = 2
    gt = torch.tensor([[6.0, 2.5, 10.0, 6.5]])  # closest anchor: x = 8, IoU 6/26, centre outside
    loose = ATSSMatcher(num_candidates=1)(gt, anchors, [10])
    strict = ATSSMatcher(num_candidates=1, center_in_gt=True)(gt, anchors, [10])
    assert torch.nonzero(loose == 0).flatten().tolist() == [3]
    assert (strict == BACKGROUND).all()


def test_iou_matcher_thresholds_and_low_quality():
    anchors = torch.tensor(
        [
            [0.0, 0, 10, 10],
            [0.0, 0, 10, 6],
            [0.0, 0, 10, 4.5],
            [20.0, 20, 30, 30],
            [50.0, 50, 52, 52],
        ]
    )
    gts = torch.tensor([[0.0, 0, 10, 10], [49.0, 49, 60, 60]])
    # ious with gt0: 1, 0.6, 0.45, 0, 0 ; anchor 4 with gt1: 4/121
    plain = IoUMatcher(0.5, 0.4, allow_low_quality=False)(gts, anchors)
    assert plain.tolist() == [0, 0, IGNORE, BACKGROUND, BACKGROUND]
    low = IoUMatcher(0.5, 0.4, allow_low_quality=True)(gts, anchors)
    assert low.tolist() == [0, 0, IGNORE, BACKGROUND, 1]
