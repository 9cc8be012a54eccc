"""Anchor coverage: the co-centred IoU, the anchor grid, and the fit."""

from __future__ import annotations

import pytest
import torch

from nndet.planning.anchors import anchors_from_bases, centred_iou, fit_anchors, mean_best_iou


def test_centred_iou_by_hand_2d():
    # 2x2 and 4x1 with one centre overlap in 2x1 = 2; union 4 + 4 - 2 = 6
    iou = centred_iou(torch.tensor([[2.0, 2.0]]), torch.tensor([[4.0, 1.0], [2.0, 2.0]]))
    assert iou[0].tolist() == pytest.approx([1 / 3, 1.0])


def test_centred_iou_by_hand_3d():
    # 2x2x2 inside 4x2x2: intersection 8, union 16
    iou = centred_iou(torch.tensor([[2.0, 2.0, 2.0]]), torch.tensor([[4.0, 2.0, 2.0]]))
    assert iou.item() == pytest.approx(0.5)


def test_centred_iou_matches_box_iou_of_centred_boxes():
    from nndet.boxes.ops import box_iou

    a, b = torch.tensor([[3.0, 5.0, 2.0]]), torch.tensor([[4.0, 1.0, 6.0]])
    boxes_a = torch.cat([-a / 2, a / 2], dim=1)
    boxes_b = torch.cat([-b / 2, b / 2], dim=1)
    assert centred_iou(a, b).item() == pytest.approx(box_iou(boxes_a, boxes_b).item())


def test_anchor_grid_combines_bases_per_axis_and_scales_by_stride():
    bases = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # [D=2, m=2]
    anchors = anchors_from_bases(bases, torch.tensor([[4.0, 4.0], [8.0, 16.0]]))
    assert anchors.shape == (2, 4, 2)  # [L, A=m**D, D]
    assert anchors[0].tolist() == [[4, 12], [4, 16], [8, 12], [8, 16]]
    assert anchors[1].tolist() == [[8, 48], [8, 64], [16, 48], [16, 64]]


def test_fit_covers_20px_circles_in_2d():
    sizes = torch.tensor([[20.0, 20.0], [19.0, 21.0], [21.0, 20.0], [20.0, 19.0]]).repeat(50, 1)
    strides = [[4, 4], [8, 8], [16, 16], [32, 32]]
    anchors, coverage = fit_anchors(sizes, strides)

    assert len(anchors) == 4 and len(anchors[0]) == 9 and len(anchors[0][0]) == 2
    assert coverage >= 0.9
    assert coverage == pytest.approx(mean_best_iou(sizes.double(), torch.tensor(anchors)).item())


def test_fit_covers_nodules_of_3_to_20_mm_in_anisotropic_3d():
    generator = torch.Generator().manual_seed(0)
    diameters = torch.empty(300, dtype=torch.float64).uniform_(3, 20, generator=generator)
    spacing = torch.tensor([2.5, 0.75, 0.75], dtype=torch.float64)
    sizes = (diameters[:, None] / spacing).ceil()
    strides = [[1, 4, 4], [2, 8, 8], [4, 16, 16], [8, 32, 32]]
    anchors, coverage = fit_anchors(sizes, strides)

    assert len(anchors[0]) == 27
    assert coverage >= 0.7
    # better than a single fixed shape per level
    fixed = torch.tensor(strides, dtype=torch.float64)[:, None, :] * 2.0
    assert coverage > mean_best_iou(sizes, fixed).item() + 0.1


def test_fit_is_deterministic_for_a_seed():
    sizes = torch.tensor([[5.0, 9.0], [12.0, 7.0], [30.0, 28.0]])
    assert fit_anchors(sizes, [[4, 4], [8, 8]], seed=3) == fit_anchors(
        sizes, [[4, 4], [8, 8]], seed=3
    )


def test_no_boxes_gives_default_anchors_and_zero_coverage():
    anchors, coverage = fit_anchors(torch.zeros(0, 2), [[4, 4], [8, 8]])
    assert coverage == 0.0
    assert len(anchors) == 2 and len(anchors[0]) == 9
