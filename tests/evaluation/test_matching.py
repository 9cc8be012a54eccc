"""Greedy matching of score-sorted detections to ground-truth objects."""

from __future__ import annotations

import torch

from nndet.evaluation.matching import match_case, match_greedy


def test_each_object_is_matched_once_per_threshold():
    # rows: detections by score; columns: objects
    ious = torch.tensor([[0.6, 0.0], [0.55, 0.3], [0.0, 0.05]], dtype=torch.float64)

    matched = match_greedy(ious, torch.tensor([0.1, 0.4], dtype=torch.float64))

    # at 0.1: d0 -> o0, d1 -> o1 (o0 taken), d2 below threshold with o1
    # at 0.4: d0 -> o0, d1 has only o1 left at 0.3 < 0.4, d2 nothing
    assert matched.tolist() == [[True, True, False], [True, False, False]]


def test_match_case_sorts_by_score_within_class_and_keeps_at_most_max_detections():
    gt_boxes = torch.tensor([[0.0, 0, 4, 4]])
    pred_boxes = torch.tensor([[0.0, 0, 4, 4]] * 3 + [[10.0, 10, 12, 12]])
    scores = torch.tensor([0.2, 0.9, 0.5, 0.7], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 0])

    case = match_case(
        pred_boxes, scores, labels, gt_boxes, torch.tensor([0]),
        torch.tensor([0.5], dtype=torch.float64), max_detections=2,
    )  # fmt: skip

    # class 0 keeps its two best (0.9 on the object, 0.7 elsewhere); class 1 has no object
    assert case.scores.tolist() == [0.9, 0.7, 0.5]
    assert case.labels.tolist() == [0, 0, 1]
    assert case.matched.tolist() == [[True, False, False]]
