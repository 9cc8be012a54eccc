"""Metrics on small scenarios whose expected values are worked out by hand in each test."""

from __future__ import annotations

import numpy as np
import pytest

from nndet.evaluation.metrics import FP_PER_CASE, evaluate


def _cube(lo: tuple[float, ...], size: float = 10.0) -> list[float]:
    return [*lo, *(v + size for v in lo)]


def _pred(boxes, scores, labels):
    return (np.array(boxes, dtype=float), np.array(scores, dtype=float), np.array(labels))


def _gt(boxes, labels):
    return (np.array(boxes, dtype=float), np.array(labels, dtype=np.int64))


def test_3d_ap_with_duplicate_and_false_positive():
    # objects: two in case a, one in case b. Detections by score:
    # 0.9 hit a1 (recall 1/3, precision 1), 0.8 nothing (1/3, 1/2), 0.7 hit b1 (2/3, 2/3),
    # 0.6 duplicate of a1 (2/3, 1/2). Interpolated precision is 1 at the 34 recall points
    # 0.00..0.33, 2/3 at the 33 points 0.34..0.66 and 0 above: AP = (34 + 22) / 101.
    a1, a2, b1 = _cube((0, 0, 0)), _cube((20, 20, 20)), _cube((5, 5, 5))
    ground_truth = {"a": _gt([a1, a2], [0, 0]), "b": _gt([b1], [0])}
    predictions = {
        "a": _pred([a1, _cube((1, 0, 0))], [0.9, 0.6], [0, 0]),
        "b": _pred([_cube((40, 40, 40)), b1], [0.8, 0.7], [0, 0]),
    }

    metrics = evaluate(predictions, ground_truth, {0: "nodule"})

    assert metrics["AP@0.1"]["nodule"] == pytest.approx(56 / 101)
    assert metrics["mAP@0.1"] == pytest.approx(56 / 101)
    assert metrics["num_cases"] == 2


def test_iou_at_the_threshold_matches_and_below_does_not():
    # the detection covers a fifth of the object: IoU 200 / 1000 = 0.2 exactly, so it hits
    # at 0.10, 0.15, 0.20 (3 of the 9 thresholds of mAP@0.1:0.5) and misses above
    gt_box = [0.0, 0, 0, 10, 10, 10]
    det_box = [0.0, 0, 0, 10, 10, 2]
    ground_truth = {"a": _gt([gt_box], [0])}
    predictions = {"a": _pred([det_box], [0.5], [0])}

    metrics = evaluate(predictions, ground_truth, {0: "x"}, iou_thresholds_extra=(0.2, 0.25))

    assert metrics["AP@0.1"]["x"] == 1.0
    assert metrics["AP@0.2"]["x"] == 1.0 and metrics["mAP@0.2"] == 1.0
    assert metrics["AP@0.25"]["x"] == 0.0
    assert metrics["mAP@0.1:0.5"] == pytest.approx(3 / 9)


def test_greedy_matching_takes_the_highest_iou_unmatched_object():
    # the first detection overlaps both objects, o2 more; it takes o2, so the second
    # detection (on o2 only) becomes a duplicate and o1 stays missed. Taking the first object
    # above the threshold instead would give AP 1.
    o1, o2 = [0.0, 0, 10, 10], [0.0, 12, 10, 22]
    det_both = [0.0, 7, 10, 17]  # IoU with o1 30/170, with o2 50/150; o2 and o1 are apart
    ground_truth = {"a": _gt([o1, o2], [0, 0])}
    predictions = {"a": _pred([det_both, o2], [0.9, 0.8], [0, 0])}

    metrics = evaluate(predictions, ground_truth, {0: "x"})

    # precision 1 at recall 1/2 (points 0.00..0.50: 51 of 101), nothing beyond
    assert metrics["AP@0.1"]["x"] == pytest.approx(51 / 101)


def test_a_detection_of_another_class_does_not_match():
    ground_truth = {"a": _gt([[0.0, 0, 10, 10]], [0])}
    predictions = {"a": _pred([[0.0, 0, 10, 10]], [0.9], [1])}

    metrics = evaluate(predictions, ground_truth, {0: "benign", 1: "malignant"})

    assert metrics["AP@0.1"] == {"benign": 0.0, "malignant": None}
    assert metrics["mAP@0.1"] == 0.0
    assert metrics["FROC@0.1"]["sensitivity"] == [0.0] * 7


def test_class_without_ground_truth_is_null_and_left_out_of_means():
    box = [0.0, 0, 10, 10]
    ground_truth = {"a": _gt([box], [0]), "b": _gt([], [])}
    predictions = {"a": _pred([box], [0.9], [0]), "b": _pred([box], [0.4], [2])}

    metrics = evaluate(predictions, ground_truth, {0: "x", 1: "y", 2: "z"})

    assert metrics["AP@0.1"] == {"x": 1.0, "y": None, "z": None}
    assert metrics["mAP@0.1"] == 1.0 and metrics["mAP@0.1:0.5"] == 1.0
    assert metrics["patient_AP"] == {"x": 1.0, "y": None, "z": None}


def test_no_objects_anywhere_gives_nulls():
    metrics = evaluate({"a": _pred([[0.0, 0, 1, 1]], [0.3], [0])}, {"a": _gt([], [])}, {0: "x"})

    assert metrics["AP@0.1"] == {"x": None} and metrics["mAP@0.1"] is None
    assert metrics["FROC@0.1"]["CPM"] is None
    assert metrics["FROC@0.1"]["sensitivity"] == [None] * 7


def test_cases_without_predictions_count_as_empty():
    box = [0.0, 0, 10, 10]
    ground_truth = {"a": _gt([box], [0]), "b": _gt([box], [0])}

    metrics = evaluate({"a": _pred([box], [0.9], [0])}, ground_truth, {0: "x"})

    # recall reaches 1/2 at precision 1: 51 of the 101 recall points
    assert metrics["AP@0.1"]["x"] == pytest.approx(51 / 101)
    assert metrics["num_cases"] == 2


def test_froc_and_cpm_pool_classes_over_cases():
    # 4 objects in 2 cases. Pooled detections by score, with (sensitivity, FP per case):
    # .9 hit a1 (.25, 0) | .8 wrong class on a1 (.25, .5) | .7 hit b2 (.5, .5)
    # .6 FP (.5, 1) | .5 FP (.5, 1.5) | .4 hit a2 (.75, 1.5) | .3 duplicate of a1 (.75, 2)
    a1, a2 = [0.0, 0, 10, 10], [20.0, 20, 30, 30]
    b1, b2 = [0.0, 40, 10, 50], [40.0, 0, 50, 10]
    far = [[80.0, 80, 90, 90], [70.0, 70, 75, 75]]
    ground_truth = {"a": _gt([a1, a2], [0, 1]), "b": _gt([b1, b2], [0, 1])}
    predictions = {
        "a": _pred([a1, a1, far[0], a2, a1], [0.9, 0.8, 0.6, 0.4, 0.3], [0, 1, 0, 1, 0]),
        "b": _pred([b2, far[1]], [0.7, 0.5], [1, 1]),
    }

    froc = evaluate(predictions, ground_truth, {0: "x", 1: "y"})["FROC@0.1"]

    expected = [0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75]
    assert froc["fp_per_case"] == list(FP_PER_CASE)
    assert froc["sensitivity"] == pytest.approx(expected)
    assert froc["CPM"] == pytest.approx(sum(expected) / 7)


def test_froc_takes_tied_scores_together():
    # a hit and a false positive share a score: the hit cannot be had without the FP
    box = [0.0, 0, 10, 10]
    ground_truth = {"a": _gt([box], [0]), "b": _gt([], [])}
    predictions = {"a": _pred([box], [0.5], [0]), "b": _pred([[50.0, 50, 60, 60]], [0.5], [0])}

    froc = evaluate(predictions, ground_truth, {0: "x"})["FROC@0.1"]

    # one FP over two cases: 0.5 FP per case before the object is found
    assert froc["sensitivity"] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_patient_ap_ranks_cases_by_their_top_score_regardless_of_location():
    # class 0 objects in p1, p3, p4. Case scores: p1 .9 (positive), n2 .8 (negative),
    # p3 .3 (positive, box far from its object), p4 none, n5 none. Ranked: recall 1/3 at
    # precision 1, 2/3 at 2/3: AP = (34 + 22) / 101 as in the box-level hand case.
    obj, far = [0.0, 0, 10, 10], [50.0, 50, 60, 60]
    ground_truth = {
        "p1": _gt([obj], [0]), "n2": _gt([], []), "p3": _gt([obj], [0]),
        "p4": _gt([obj], [0]), "n5": _gt([obj], [1]),
    }  # fmt: skip
    predictions = {
        "p1": _pred([obj, far], [0.9, 0.2], [0, 0]),
        "n2": _pred([obj], [0.8], [0]),
        "p3": _pred([far], [0.3], [0]),
        "n5": _pred([obj], [0.95], [1]),
    }

    patient = evaluate(predictions, ground_truth, {0: "x", 1: "y"})["patient_AP"]

    assert patient["x"] == pytest.approx(56 / 101)
    assert patient["y"] == 1.0


def test_without_class_names_classes_are_the_ids_found():
    box = [0.0, 0, 10, 10]
    metrics = evaluate({"a": _pred([box], [0.9], [3])}, {"a": _gt([box], [1])})

    assert metrics["AP@0.1"] == {"1": 0.0, "3": None}


def test_a_predicted_label_outside_the_classes_is_an_error():
    box = [0.0, 0, 10, 10]
    with pytest.raises(ValueError, match="case a: predicted labels \\[5\\]"):
        evaluate({"a": _pred([box], [0.9], [5])}, {"a": _gt([box], [0])}, {0: "x"})


def test_result_has_exactly_the_documented_keys():
    box = [0.0, 0, 10, 10]
    metrics = evaluate({}, {"a": _gt([box], [0])}, {0: "x"}, iou_thresholds_extra=(0.3,))

    assert list(metrics) == [
        "num_cases", "AP@0.1", "mAP@0.1", "mAP@0.1:0.5", "FROC@0.1", "patient_AP",
        "AP@0.3", "mAP@0.3",
    ]  # fmt: skip
    assert metrics["AP@0.1"] == {"x": 0.0}


def test_class_names_with_string_keys_as_in_dataset_json():
    box = [0.0, 0, 10, 10]
    metrics = evaluate({"a": _pred([box], [0.9], [0])}, {"a": _gt([box], [0])}, {"0": "x"})

    assert metrics["AP@0.1"] == {"x": 1.0}
