"""AP of nndet.evaluation against pycocotools' COCOeval (``coco_oracle`` in conftest.py) on
the same boxes, in 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest

from nndet.evaluation.metrics import IOU_THRESHOLDS, evaluate

EXTRA_IOU = (0.7,)


def random_scenario(seed: int, dim: int, num_classes: int = 3, num_cases: int = 12):
    """Cases with several classes, misses, jittered hits, duplicates, false positives and
    cases without objects or without predictions; the last class never has objects."""
    rng = np.random.default_rng(seed)
    size = 64.0
    predictions, ground_truth = {}, {}
    for case in range(num_cases):
        num_gt = int(rng.integers(0, 6)) if case % 4 else 0
        lo = rng.uniform(0, size - 20, (num_gt, dim))
        gt_boxes = np.concatenate([lo, lo + rng.uniform(3, 20, (num_gt, dim))], axis=1)
        gt_labels = rng.integers(0, num_classes - 1, num_gt)
        ground_truth[f"case{case:02d}"] = (gt_boxes.reshape(-1, 2 * dim), gt_labels)

        det_boxes, det_labels = [], []
        for box, label in zip(gt_boxes, gt_labels, strict=True):
            for _ in range(int(rng.choice([0, 1, 1, 2]))):  # miss, hit, or hit + duplicate
                extent = box[dim:] - box[:dim]
                shift = rng.normal(0, 0.35, dim) * extent
                scale = rng.uniform(0.6, 1.5, dim)
                det_lo = box[:dim] + shift
                det_boxes.append(np.concatenate([det_lo, det_lo + extent * scale]))
                det_labels.append(label if rng.random() > 0.15 else rng.integers(0, num_classes))
        for _ in range(int(rng.integers(0, 4))):  # false positives anywhere
            det_lo = rng.uniform(0, size - 10, dim)
            det_boxes.append(np.concatenate([det_lo, det_lo + rng.uniform(3, 15, dim)]))
            det_labels.append(rng.integers(0, num_classes))
        if case % 5 == 3:
            det_boxes, det_labels = [], []  # a case without predictions
        predictions[f"case{case:02d}"] = (
            np.array(det_boxes).reshape(-1, 2 * dim),
            rng.uniform(0, 1, len(det_boxes)),
            np.array(det_labels, dtype=np.int64),
        )
    return predictions, ground_truth


def _ours(metrics: dict, class_names: dict[int, str]) -> np.ndarray:
    thresholds = (*IOU_THRESHOLDS, *EXTRA_IOU)
    return np.array(
        [
            [
                np.nan if (v := metrics[f"AP@{t:g}"][class_names[c]]) is None else v
                for c in class_names
            ]
            for t in thresholds
        ]
    )


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_ap_equals_pycocotools_on_random_cases(seed, dim, coco_oracle):
    predictions, ground_truth = random_scenario(seed, dim)
    class_names = {0: "a", 1: "b", 2: "never"}
    thresholds = (*IOU_THRESHOLDS, *EXTRA_IOU)

    metrics = evaluate(predictions, ground_truth, class_names, iou_thresholds_extra=thresholds)
    expected = coco_oracle(predictions, ground_truth, list(class_names), thresholds)

    np.testing.assert_allclose(_ours(metrics, class_names), expected, atol=1e-3)
    assert metrics["AP@0.1"]["never"] is None
    np.testing.assert_allclose(metrics["mAP@0.1"], np.nanmean(expected[0]), atol=1e-3)
    np.testing.assert_allclose(
        metrics["mAP@0.1:0.5"], np.nanmean(expected[: len(IOU_THRESHOLDS)]), atol=1e-3
    )


def test_more_than_100_detections_per_case_are_cut_like_pycocotools(coco_oracle):
    rng = np.random.default_rng(7)
    gt_lo = rng.uniform(0, 200, (30, 2))
    gt_boxes = np.concatenate([gt_lo, gt_lo + 10], axis=1)
    det_lo = np.concatenate([gt_lo + rng.normal(0, 2, gt_lo.shape), rng.uniform(0, 200, (150, 2))])
    det_boxes = np.concatenate([det_lo, det_lo + 10], axis=1)
    # false positives outscore some true ones, so the cut at 100 drops real hits
    scores = np.concatenate([rng.uniform(0, 1, 30), rng.uniform(0.2, 1, 150)])
    predictions = {"only": (det_boxes, scores, np.zeros(180, dtype=np.int64))}
    ground_truth = {"only": (gt_boxes, np.zeros(30, dtype=np.int64))}

    metrics = evaluate(predictions, ground_truth, {0: "x"})
    expected = coco_oracle(predictions, ground_truth, [0], [0.1])

    assert metrics["AP@0.1"]["x"] == pytest.approx(float(expected[0, 0]), abs=1e-3)
    uncut = evaluate({"only": (det_boxes[:30], scores[:30], np.zeros(30))}, ground_truth)
    assert metrics["AP@0.1"]["x"] < uncut["AP@0.1"]["0"]
