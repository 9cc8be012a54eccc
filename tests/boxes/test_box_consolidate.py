"""2D -> 3D consolidation of per-slice boxes."""

from __future__ import annotations

import pytest
import torch

from nndet.boxes.consolidate import consolidate_slices


def _stack(slices, box=(10.0, 10.0, 20.0, 20.0)):
    boxes = torch.tensor([box] * len(slices))
    return boxes, torch.tensor(slices)


def test_connected_slices_become_one_box_and_a_gap_splits():
    boxes, slices = _stack([3, 4, 5, 7])
    scores = torch.tensor([0.6, 0.9, 0.7, 0.8])
    out, out_scores, labels = consolidate_slices(
        boxes, scores, torch.zeros(4, dtype=torch.long), slices, 0.5, method="nms"
    )
    assert out.tolist() == [[3.0, 10, 10, 6, 20, 20], [7.0, 10, 10, 8, 20, 20]]
    assert out_scores.tolist() == pytest.approx([0.9, 0.8])
    assert labels.tolist() == [0, 0]


def test_connection_runs_through_other_members_not_only_the_top():
    # top in slice 5; slices 2..4 joined through each other, a box in slice 0 is cut off
    boxes, slices = _stack([5, 4, 3, 2, 0])
    scores = torch.tensor([0.9, 0.5, 0.4, 0.3, 0.8])
    out, _, _ = consolidate_slices(
        boxes, scores, torch.zeros(5, dtype=torch.long), slices, 0.5, method="nms"
    )
    assert sorted(tuple(b[::3]) for b in out.tolist()) == [(0.0, 1.0), (2.0, 6.0)]


def test_boxes_that_do_not_overlap_in_plane_stay_apart():
    boxes = torch.tensor([[10.0, 10, 20, 20], [30.0, 30, 40, 40], [10.0, 11, 20, 21]])
    out, _, _ = consolidate_slices(
        boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long),
        torch.tensor([1, 2, 2]), 0.5,
    )  # fmt: skip
    assert len(out) == 2
    assert out[0, 0].item() == 1 and out[0, 3].item() == 3  # slices 1..2 joined


def test_classes_are_consolidated_separately():
    boxes, slices = _stack([1, 2])
    out, _, labels = consolidate_slices(
        boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), slices, 0.5
    )
    assert sorted(labels.tolist()) == [0, 1]
    assert (out[:, 3] - out[:, 0]).tolist() == [1.0, 1.0]


def test_wbc_averages_in_plane_coordinates_by_score():
    boxes = torch.tensor([[10.0, 10, 20, 20], [10.0, 12, 20, 22]], dtype=torch.float64)
    scores = torch.tensor([0.75, 0.25], dtype=torch.float64)
    out, out_scores, _ = consolidate_slices(
        boxes, scores, torch.zeros(2, dtype=torch.long), torch.tensor([4, 5]), 0.5,
        area_weighting="none",
    )  # fmt: skip
    # weights: IoU with the top (1 and 80/120), area weight 1
    w = torch.tensor([1.0, 80 / 120], dtype=torch.float64)
    sw = scores * w
    expected_plane = (boxes * sw[:, None]).sum(0) / sw.sum()
    assert torch.allclose(out[0, [1, 2, 4, 5]], expected_plane)
    assert out[0, [0, 3]].tolist() == [4.0, 6.0]
    assert out_scores.item() == pytest.approx((sw.sum() / w.sum()).item())


def test_empty_input_gives_no_boxes():
    out, scores, labels = consolidate_slices(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long), 0.5,
    )  # fmt: skip
    assert out.shape == (0, 6) and scores.shape == (0,) and labels.shape == (0,)
