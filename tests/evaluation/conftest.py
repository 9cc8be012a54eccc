"""The pycocotools oracle shared by the evaluation tests.

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


@pytest.fixture()
def coco_oracle():
    """``coco_ap(predictions, ground_truth, class_ids, thresholds) -> AP [T, K]`` (NaN: no GT)."""
    return coco_ap
