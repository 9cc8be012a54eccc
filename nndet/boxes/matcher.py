"""Assignment of ground-truth boxes to anchors: ATSS and a plain IoU matcher.

Both return, per anchor, the index of its ground-truth box, or :data:`BACKGROUND`
(negative for the classifier) or :data:`IGNORE` (no loss at all).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nndet.boxes.ops import box_center, box_dim, box_iou

BACKGROUND = -1
IGNORE = -2


def _best_positive(iou: Tensor, positive: Tensor) -> Tensor:
    """Per anchor, the positive gt with the highest IoU; BACKGROUND where none.

    Args:
        iou: float [G, N]. positive: bool [G, N].

    Returns:
        long [N]; ties between gts go to the lower gt index (``argmax`` returns the first).
    """
    masked = torch.where(positive, iou, torch.full_like(iou, -1.0))
    best, matches = masked.max(dim=0)
    return torch.where(best >= 0, matches, torch.full_like(matches, BACKGROUND))


class ATSSMatcher:
    """Adaptive Training Sample Selection (Zhang et al., CVPR 2020), as nnDetection uses it.

    For each gt box: take on every level the ``num_candidates`` anchors whose centres are
    closest to the gt centre; the IoU threshold of that gt is mean + standard deviation of its
    candidates' IoUs; candidates at or above it (and with IoU > 0) are positive. An anchor
    positive for several gts goes to the one with the highest IoU.

    Args:
        num_candidates: candidates per level and gt (ATSS's k; nnDetection uses 4 for its
            small 3D objects where the paper uses 9).
        center_in_gt: also require the anchor centre to lie inside the gt box (the paper
            does; nnDetection turns it off because small objects then lose all anchors).

    Notes:
        Equally distant anchors are taken in index order. The standard deviation is the
        unbiased one (as in the reference implementations);
        with a single candidate it is taken as 0.
    """

    def __init__(self, num_candidates: int = 4, center_in_gt: bool = False) -> None:
        self.num_candidates = num_candidates
        self.center_in_gt = center_in_gt

    def __call__(
        self, gt_boxes: Tensor, anchors: Tensor, num_anchors_per_level: Sequence[int]
    ) -> Tensor:
        """Match anchors to gt boxes.

        Args:
            gt_boxes: float [G, 2*D] in corner format.
            anchors: float [N, 2*D] in corner format, all levels concatenated in level order.
            num_anchors_per_level: anchors of each level (summing to N).

        Returns:
            long [N]: matched gt index per anchor, or BACKGROUND.
        """
        num = anchors.shape[0]
        if sum(num_anchors_per_level) != num:
            raise ValueError(
                f"num_anchors_per_level sums to {sum(num_anchors_per_level)}, anchors are {num}"
            )
        if gt_boxes.shape[0] == 0 or num == 0:
            return torch.full((num,), BACKGROUND, dtype=torch.long, device=anchors.device)

        iou = box_iou(gt_boxes, anchors)  # [G, N]
        dist = torch.cdist(box_center(gt_boxes), box_center(anchors))  # [G, N]

        # k closest anchors per level, as indices into all anchors
        candidates, start = [], 0
        for count in num_anchors_per_level:
            k = min(self.num_candidates, count)
            if k > 0:
                # stable sort: equally distant anchors (A anchors share a centre) are taken
                # in index order, so the result does not depend on topk's tie handling
                level_dist = dist[:, start : start + count]
                local = level_dist.sort(dim=1, stable=True).indices[:, :k]
                candidates.append(local + start)
            start += count
        candidates = torch.cat(candidates, dim=1)  # [G, C]

        cand_iou = iou.gather(1, candidates)
        std = cand_iou.std(dim=1) if candidates.shape[1] > 1 else torch.zeros_like(cand_iou[:, 0])
        threshold = cand_iou.mean(dim=1) + std
        cand_positive = (cand_iou >= threshold[:, None]) & (cand_iou > 0)

        if self.center_in_gt:
            d = box_dim(anchors)
            centers = box_center(anchors)[candidates]  # [G, C, D]
            inside = (centers > gt_boxes[:, None, :d]) & (centers < gt_boxes[:, None, d:])
            cand_positive &= inside.all(dim=-1)

        positive = torch.zeros_like(iou, dtype=torch.bool)
        positive.scatter_(1, candidates, cand_positive)
        return _best_positive(iou, positive)


class IoUMatcher:
    """Matching by IoU thresholds, as in RetinaNet.

    An anchor's best gt IoU ``>= fg_iou`` makes it positive for that gt, ``< bg_iou``
    BACKGROUND, in between IGNORE. With ``allow_low_quality`` every gt also keeps the anchors
    of its own highest IoU (if > 0), each matched to its best gt, so that no gt is left
    without an anchor.

    Args:
        fg_iou: foreground threshold. bg_iou: background threshold (<= fg_iou).
        allow_low_quality: keep each gt's best anchors even below ``fg_iou``.
    """

    def __init__(
        self, fg_iou: float = 0.5, bg_iou: float = 0.4, allow_low_quality: bool = True
    ) -> None:
        if bg_iou > fg_iou:
            raise ValueError(f"IoUMatcher needs bg_iou <= fg_iou, got {bg_iou} > {fg_iou}")
        self.fg_iou = fg_iou
        self.bg_iou = bg_iou
        self.allow_low_quality = allow_low_quality

    def __call__(
        self,
        gt_boxes: Tensor,
        anchors: Tensor,
        num_anchors_per_level: Sequence[int] | None = None,
    ) -> Tensor:
        """Match anchors to gt boxes.

        Args:
            gt_boxes: float [G, 2*D] in corner format.
            anchors: float [N, 2*D] in corner format.
            num_anchors_per_level: unused, accepted for the same call as ATSSMatcher.

        Returns:
            long [N]: matched gt index per anchor, BACKGROUND or IGNORE.
        """
        num = anchors.shape[0]
        if gt_boxes.shape[0] == 0 or num == 0:
            return torch.full((num,), BACKGROUND, dtype=torch.long, device=anchors.device)

        iou = box_iou(gt_boxes, anchors)  # [G, N]
        best, matches = iou.max(dim=0)
        result = matches.clone()
        result[best < self.fg_iou] = IGNORE
        result[best < self.bg_iou] = BACKGROUND

        if self.allow_low_quality:
            gt_best = iou.max(dim=1, keepdim=True).values  # [G, 1]
            low_quality = ((iou == gt_best) & (gt_best > 0)).any(dim=0)
            result[low_quality] = matches[low_quality]
        return result
