"""AP of nndet.evaluation against pycocotools' COCOeval on the same boxes, in 2D and 3D.

In 3D, COCOeval keeps its own matching and accumulation, and only its IoU is replaced by a
plain numpy 3D IoU written here, so the oracle stays independent of nndet's box ops.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from nndet.evaluation.metrics import IOU_THRESHOLDS, evaluate

EXTRA_IOU = (0.7,)


def _iou_3d_numpy(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """[N, 6] x [G, 6] -> [N, G], boxes [lo0, lo1, lo2, hi0, hi1, hi2]."""
    lo = np.maximum(dets[:, None, :3], gts[None, :, :3])
    hi = np.minimum(dets[:, None, 3:], gts[None, :, 3:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    vol_d = np.prod(dets[:, 3:] - dets[:, :3], axis=-1)
    vol_g = np.prod(gts[:, 3:] - gts[:, :3], axis=-1)
    return inter / (vol_d[:, None] + vol_g[None, :] - inter)


class _COCOeval3D(COCOeval):
    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: self.params.maxDets[-1]]
        if len(gt) == 0 or len(dt) == 0:
            return []
        return _iou_3d_numpy(np.array([d["box3d"] for d in dt]), np.array([g["box3d"] for g in gt]))


def _coco_xywh(box: np.ndarray) -> list[float]:
    """COCO [x, y, w, h] of nndet [lo0, lo1, (lo2,) hi0, hi1, (hi2)]: x along axis 1, y
    along axis 0 (in 3D only COCO's area filter sees it, and that filter is open)."""
    dim = len(box) // 2
    return [box[1], box[0], box[dim + 1] - box[1], box[dim] - box[0]]


def coco_ap(predictions, ground_truth, class_ids, thresholds) -> np.ndarray:
    """AP [T, K] from COCOeval, NaN for classes without ground truth."""
    case_ids = sorted(ground_truth)
    images = [{"id": i + 1} for i in range(len(case_ids))]
    categories = [{"id": c + 1} for c in class_ids]
    gt_anns, dt_anns = [], []
    for image_id, case_id in enumerate(case_ids, start=1):
        for box, label in zip(*ground_truth[case_id], strict=True):
            xywh = _coco_xywh(box)
            gt_anns.append(
                {"id": len(gt_anns) + 1, "image_id": image_id, "category_id": int(label) + 1,
                 "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0, "box3d": list(box)}
            )  # fmt: skip
        boxes, scores, labels = predictions.get(case_id, (np.zeros((0, 4)), [], []))
        for box, score, label in zip(boxes, scores, labels, strict=True):
            xywh = _coco_xywh(box)
            dt_anns.append(
                {"id": len(dt_anns) + 1, "image_id": image_id, "category_id": int(label) + 1,
                 "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0, "score": float(score),
                 "box3d": list(box)}
            )  # fmt: skip

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gt_anns}
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dt_anns}
        coco_gt.createIndex()
        coco_dt.createIndex()
        is_3d = any(len(a["box3d"]) == 6 for a in gt_anns + dt_anns)
        evaluator = (_COCOeval3D if is_3d else COCOeval)(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = [im["id"] for im in images]
        evaluator.params.iouThrs = np.array(thresholds)
        evaluator.params.maxDets = [100]
        evaluator.params.areaRng = [[0.0, 1e12]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, 0]  # [T, R, K]
    ap = precision.mean(axis=1)
    ap[(precision < 0).any(axis=1)] = np.nan
    return ap


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
def test_ap_equals_pycocotools_on_random_cases(seed, dim):
    predictions, ground_truth = random_scenario(seed, dim)
    class_names = {0: "a", 1: "b", 2: "never"}

    metrics = evaluate(
        predictions, ground_truth, class_names, iou_thresholds_extra=(*IOU_THRESHOLDS, *EXTRA_IOU)
    )
    expected = coco_ap(predictions, ground_truth, list(class_names), (*IOU_THRESHOLDS, *EXTRA_IOU))

    np.testing.assert_allclose(_ours(metrics, class_names), expected, atol=1e-3)
    assert metrics["AP@0.1"]["never"] is None
    np.testing.assert_allclose(metrics["mAP@0.1"], np.nanmean(expected[0]), atol=1e-3)
    np.testing.assert_allclose(
        metrics["mAP@0.1:0.5"], np.nanmean(expected[: len(IOU_THRESHOLDS)]), atol=1e-3
    )


def test_more_than_100_detections_per_case_are_cut_like_pycocotools():
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
    expected = coco_ap(predictions, ground_truth, [0], [0.1])

    assert metrics["AP@0.1"]["x"] == pytest.approx(float(expected[0, 0]), abs=1e-3)
    uncut = evaluate({"only": (det_boxes[:30], scores[:30], np.zeros(30))}, ground_truth)
    assert metrics["AP@0.1"]["x"] < uncut["AP@0.1"]["0"]
