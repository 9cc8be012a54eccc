"""Matching detections to ground-truth objects, per case and class, as COCO does.

Rules (``documentation/evaluation.md``): within one case and one class, detections are taken
in order of decreasing score (stable, at most ``max_detections``); each is matched to the
still unmatched ground-truth box of the same class with the highest IoU, provided that IoU is
at or above the threshold. A detection without such a box is a false positive; a
ground-truth box left unmatched is a miss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nndet.boxes.ops import box_iou

# COCO's maxDets for its headline AP; nnDetection keeps it for medical detection.
MAX_DETECTIONS = 100


@dataclass(frozen=True)
class CaseMatches:
    """The matched detections of one case, grouped by class.

    Attributes:
        scores: float [N], detections in class order, within a class by decreasing score.
        labels: long [N], class of each detection.
        matched: bool [T, N], whether the detection matches an object at each threshold.
        gt_labels: long [G], class of each ground-truth object of the case.
    """

    scores: Tensor
    labels: Tensor
    matched: Tensor
    gt_labels: Tensor


def match_greedy(ious: Tensor, iou_thresholds: Tensor) -> Tensor:
    """Greedy matching of score-sorted detections at several IoU thresholds at once.

    Args:
        ious: float [N, G], IoU of detections (rows, by decreasing score) with objects.
        iou_thresholds: float [T].

    Returns:
        bool [T, N]: detection n matches an object at threshold t.

    Notes:
        Among objects tied on IoU, the first is taken (COCO takes the last); AP can differ
        only when such exact ties meet a later detection, which real scores do not produce.
    """
    num_thresholds, (num_det, num_gt) = len(iou_thresholds), ious.shape
    matched = torch.zeros(num_thresholds, num_det, dtype=torch.bool)
    if num_det == 0 or num_gt == 0:
        return matched

    taken = torch.zeros(num_thresholds, num_gt, dtype=torch.bool)
    lowest = float(iou_thresholds.min())
    for n in range(num_det):
        # a detection below every threshold with every object can match nothing
        if float(ious[n].max()) < lowest:
            continue
        candidates = ious[n].expand(num_thresholds, num_gt).masked_fill(taken, -1.0)
        best_iou, best = candidates.max(dim=1)
        hit = best_iou >= iou_thresholds
        matched[hit, n] = True
        taken[hit.nonzero(as_tuple=True)[0], best[hit]] = True
    return matched


def match_case(
    pred_boxes: Tensor,
    pred_scores: Tensor,
    pred_labels: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    iou_thresholds: Tensor,
    max_detections: int = MAX_DETECTIONS,
) -> CaseMatches:
    """Match one case's detections to its objects, class by class.

    Args:
        pred_boxes: float [N, 2*D] in nndet's box convention.
        pred_scores: float [N].
        pred_labels: long [N], class ids.
        gt_boxes: float [G, 2*D].
        gt_labels: long [G].
        iou_thresholds: float [T].
        max_detections: detections kept per case and class, the highest scored.

    Returns:
        The kept detections with their matches; see :class:`CaseMatches`.
    """
    pred_boxes, gt_boxes = pred_boxes.double(), gt_boxes.double()
    scores, labels, matched = [], [], []
    for label in torch.unique(pred_labels).tolist():
        select = (pred_labels == label).nonzero(as_tuple=True)[0]
        order = torch.sort(pred_scores[select], descending=True, stable=True).indices
        select = select[order[:max_detections]]
        gt_select = gt_labels == label
        ious = box_iou(pred_boxes[select], gt_boxes[gt_select])
        matched.append(match_greedy(ious, iou_thresholds))
        scores.append(pred_scores[select])
        labels.append(pred_labels[select])

    if not scores:
        empty = torch.zeros(0)
        return CaseMatches(
            scores=empty.double(),
            labels=empty.long(),
            matched=torch.zeros(len(iou_thresholds), 0, dtype=torch.bool),
            gt_labels=gt_labels.long(),
        )
    return CaseMatches(
        scores=torch.cat(scores).double(),
        labels=torch.cat(labels).long(),
        matched=torch.cat(matched, dim=1),
        gt_labels=gt_labels.long(),
    )
