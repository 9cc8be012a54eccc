"""Losses of Retina U-Net: mined sigmoid BCE, GIoU box regression, CE + soft Dice segmentation.

Every loss is computed in float32 whatever the dtype of the network outputs, so mixed
precision only changes the network, not the loss arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import Tensor, nn

from nndet.boxes.coder import BoxCoder
from nndet.boxes.matcher import BACKGROUND
from nndet.boxes.ops import giou_loss


def classification_loss(
    logits: Tensor,
    anchor_labels: Tensor,
    negative_ratio: float = 3.0,
    min_negatives: int = 4,
) -> Tensor:
    """Sigmoid BCE over all positives and the hardest negatives of every image.

    Args:
        logits: float [B, N, K] class logits of all anchors.
        anchor_labels: long [B, N]: class id of the matched object, ``BACKGROUND`` (-1) or
            ``IGNORE`` (-2).
        negative_ratio: negatives kept per positive in an image (1:3, as SSD's hard negative
            mining; nnDetection samples about 1:2 from a pool of hard negatives).
        min_negatives: negatives kept in an image with few or no positives, so that empty
            patches still teach the classifier what background looks like.

    Returns:
        float scalar: summed BCE of the kept anchors (all K logits each) divided by the
        number of positives in the batch (at least 1).
    """
    logits = logits.float()
    positive = anchor_labels >= 0
    negative = anchor_labels == BACKGROUND
    targets = torch.zeros_like(logits)
    targets[positive] = F.one_hot(anchor_labels[positive], logits.shape[-1]).to(logits.dtype)
    per_anchor = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)

    # Hardest negatives: the highest loss among background anchors, per image.
    num_pos = positive.sum(dim=1)
    num_neg = (num_pos * negative_ratio).long().clamp(min=min_negatives)
    num_neg = torch.minimum(num_neg, negative.sum(dim=1))
    k = int(num_neg.max().item()) if num_neg.numel() else 0
    neg_loss = per_anchor.detach().masked_fill(~negative, float("-inf"))
    _, hardest = neg_loss.topk(k, dim=1)
    rank = torch.arange(k, device=logits.device)
    keep = torch.zeros_like(negative)
    keep.scatter_(1, hardest, rank[None, :] < num_neg[:, None])

    selected = positive | keep
    return (per_anchor * selected).sum() / num_pos.sum().clamp(min=1)


def regression_loss(
    deltas: Tensor,
    anchors: Tensor,
    anchor_labels: Tensor,
    matched_boxes: Tensor,
    coder: BoxCoder,
    l1_weight: float = 0.0,
) -> dict[str, Tensor]:
    """GIoU loss of the decoded boxes of positive anchors, and optionally L1 on their deltas.

    Args:
        deltas: float [B, N, 2*D] predicted deltas of all anchors.
        anchors: float [N, 2*D] anchors in corner format (the same for every image).
        anchor_labels: long [B, N] as in :func:`classification_loss`.
        matched_boxes: float [B, N, 2*D] the matched object box of every anchor (read only
            where ``anchor_labels >= 0``).
        coder: the box coder of the detector.
        l1_weight: weight of an L1 loss on deltas; 0 leaves it out of the result.

    Returns:
        ``{"box_giou": scalar}`` (plus ``"box_l1"`` when ``l1_weight > 0``), each summed over
        the positives of the batch and divided by their number (at least 1).
    """
    positive = anchor_labels >= 0
    num_pos = positive.sum().clamp(min=1)
    batch_index, anchor_index = positive.nonzero(as_tuple=True)
    pred_deltas = deltas.float()[batch_index, anchor_index]
    pos_anchors = anchors.float()[anchor_index]
    target_boxes = matched_boxes.float()[batch_index, anchor_index]

    pred_boxes = coder.decode(pred_deltas, pos_anchors)
    losses = {"box_giou": giou_loss(pred_boxes, target_boxes, reduction="sum") / num_pos}
    if l1_weight > 0:
        target_deltas = coder.encode(pos_anchors, target_boxes)
        l1 = F.l1_loss(pred_deltas, target_deltas, reduction="sum") / num_pos
        losses["box_l1"] = l1_weight * l1
    return losses


class SegmentationLoss(nn.Module):
    """Cross-entropy plus soft Dice, the Dice taken over the batch as one pseudo-volume.

    nnunetv2's ``DC_and_CE_loss`` with ``MemoryEfficientSoftDiceLoss(batch_dice=True,
    do_bg=False)``: the Dice of each foreground class pools all images of the batch, so
    patches without an object do not produce a Dice of 0 on their own (as in nnU-Net and
    the Retina U-Net paper). Voxels labelled -1 are ignored.
    """

    def __init__(self, ignore_label: int = -1) -> None:
        super().__init__()
        # smooth 1e-5 as nnU-Net's trainer; ddp off: the gather belongs to the training loop.
        dice_kwargs = {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}
        self.loss = DC_and_CE_loss(
            dice_kwargs,
            {},
            weight_ce=1,
            weight_dice=1,
            ignore_label=ignore_label,
            dice_class=MemoryEfficientSoftDiceLoss,
        )

    def forward(self, seg_logits: Tensor, seg: Tensor) -> Tensor:
        """Loss of logits float [B, K + 1, *spatial] against a long map [B, *spatial]."""
        return self.loss(seg_logits.float(), seg[:, None].to(seg_logits.device, torch.long))
