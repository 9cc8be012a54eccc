"""The losses on hand-made inputs: mining, normalisation, GIoU/L1, batch Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nndet.boxes.coder import BoxCoder
from nndet.boxes.matcher import BACKGROUND, IGNORE
from nndet.model.losses import SegmentationLoss, classification_loss, regression_loss


def _bce(logit: float, target: float) -> float:
    return F.binary_cross_entropy_with_logits(
        torch.tensor(float(logit)), torch.tensor(float(target))
    ).item()


def test_mining_keeps_positives_and_the_hardest_negatives_only():
    # one image, K=1: 1 positive, 5 negatives of increasing logit, 1 ignored with a huge logit
    logits = torch.tensor([[[0.5], [-4.0], [-3.0], [-2.0], [-1.0], [0.0], [9.0]]])
    labels = torch.tensor([[0] + [BACKGROUND] * 5 + [IGNORE]])

    loss = classification_loss(logits, labels, negative_ratio=3, min_negatives=1)

    # the positive plus the three hardest negatives (0, -1, -2), over one positive
    expected = _bce(0.5, 1) + _bce(0.0, 0) + _bce(-1.0, 0) + _bce(-2.0, 0)
    assert abs(loss.item() - expected) < 1e-5


def test_an_empty_image_contributes_its_minimum_of_hard_negatives():
    logits = torch.tensor([[[1.0], [0.0], [-1.0], [-2.0]], [[3.0], [0.0], [0.0], [0.0]]])
    labels = torch.tensor([[0, BACKGROUND, BACKGROUND, BACKGROUND], [BACKGROUND] * 4])

    loss = classification_loss(logits, labels, negative_ratio=1, min_negatives=2)

    # image 0: positive + 1 negative (ratio 1, but at least 2) -> 2 negatives; image 1: 2
    image0 = _bce(1.0, 1) + _bce(0.0, 0) + _bce(-1.0, 0)
    image1 = _bce(3.0, 0) + _bce(0.0, 0)
    assert abs(loss.item() - (image0 + image1)) < 1e-5


def test_positives_are_trained_against_the_other_classes_too():
    logits = torch.tensor([[[2.0, 1.0, -1.0]]])
    labels = torch.tensor([[1]])

    loss = classification_loss(logits, labels, min_negatives=0)

    assert abs(loss.item() - (_bce(2.0, 0) + _bce(1.0, 1) + _bce(-1.0, 0))) < 1e-5


def test_regression_loss_is_zero_for_exact_deltas_and_ignores_negatives():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0, 8, 8], [8, 8, 16, 16], [0, 0, 4, 4]])
    targets = torch.tensor([[[1.0, 1, 9, 10], [7, 9, 15, 17], [0, 0, 0, 0]]])
    labels = torch.tensor([[0, 1, BACKGROUND]])
    deltas = coder.encode(anchors, targets[0])[None].clone()
    deltas[0, 2] = 5.0  # garbage on the negative anchor

    losses = regression_loss(deltas, anchors, labels, targets, coder, l1_weight=1.0)

    assert losses["box_giou"].abs().item() < 1e-5
    assert losses["box_l1"].abs().item() < 1e-5


def test_regression_loss_averages_over_positives():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0, 8, 8], [0.0, 0, 8, 8]])
    targets = torch.tensor([[[0.0, 0, 8, 8], [0.0, 0, 8, 8]]])
    deltas = torch.zeros(1, 2, 4)
    deltas[0, 0, 2:] = torch.log(torch.tensor(2.0))  # a box twice as large: IoU 1/4

    losses = regression_loss(deltas, anchors, torch.tensor([[0, 0]]), targets, coder)

    assert abs(losses["box_giou"].item() - 0.75 / 2) < 1e-5
    assert "box_l1" not in losses


def test_regression_loss_without_positives_is_zero_with_a_gradient():
    deltas = torch.randn(2, 5, 6, requires_grad=True)
    losses = regression_loss(
        deltas, torch.rand(5, 6), torch.full((2, 5), BACKGROUND), torch.zeros(2, 5, 6), BoxCoder()
    )
    losses["box_giou"].backward()

    assert losses["box_giou"].item() == 0 and deltas.grad is not None


def test_segmentation_dice_pools_the_batch_into_one_volume():
    seg = torch.zeros(2, 8, 8, dtype=torch.long)
    seg[0, 2:6, 2:6] = 1  # image 1 has no object
    predicted = seg.clone()  # perfect on image 0 ...
    predicted[1, 0:2, 0:2] = 1  # ... and 4 false positive pixels on the empty image 1
    logits = 20.0 * F.one_hot(predicted, 2).permute(0, 3, 1, 2).float()

    loss = SegmentationLoss()(logits, seg).item()

    prob = torch.softmax(logits, dim=1)
    ce = F.cross_entropy(logits, seg).item()
    fg = prob[:, 1]
    intersect = (fg * (seg == 1)).sum()
    dice = (2 * intersect + 1e-5) / (fg.sum() + (seg == 1).sum() + 1e-5)
    assert abs(loss - (ce - dice.item())) < 1e-4
    # one pooled Dice: 2*16 / (20 + 16), not the mean of per-image Dice (1 and 0)
    assert abs(dice.item() - 32 / 36) < 1e-3


def test_segmentation_ignores_voxels_labelled_minus_one():
    seg = torch.ones(1, 4, 4, dtype=torch.long)
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 1] = 20.0
    seg_ignored = seg.clone()
    seg_ignored[0, :2] = -1
    logits_wrong = logits.clone()
    logits_wrong[0, 1, :2] = -20.0  # wrong only where ignored

    loss_fn = SegmentationLoss()
    assert abs(loss_fn(logits_wrong, seg_ignored).item() - loss_fn(logits, seg).item()) < 1e-4
