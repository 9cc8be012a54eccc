"""The detector: a U-FPN with shared detection heads and a segmentation head (Retina U-Net).

Three variants of one class reproduce the comparison of the Retina U-Net paper (Jaeger et al.
2018), chosen by ``model``:

- ``retina_unet`` (default): heads on the detection levels, segmentation loss on P0.
- ``retina_net``: the same heads, the decoder stops at the finest detection level, no
  segmentation.
- ``detunet``: segmentation only; boxes around connected components of the softmax map.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from nndet.boxes.anchors import AnchorGenerator
from nndet.boxes.coder import BoxCoder
from nndet.boxes.matcher import ATSSMatcher
from nndet.boxes.ops import clip_boxes
from nndet.model.components import component_boxes
from nndet.model.heads import ClassificationHead, RegressionHead, flatten_level, flatten_levels
from nndet.model.losses import SegmentationLoss, classification_loss, regression_loss
from nndet.model.ufpn import UFPN
from nndet.planning.plan import Plan

logger = logging.getLogger(__name__)

MODELS = ("retina_unet", "retina_net", "detunet")

# Widest head: 128 channels, the P2 width of nnU-Net's default 2D and 3D topologies; the cap keeps
# heads on P2 of a wide 3D plan affordable. Narrower plans keep their finest level's width.
MAX_HEAD_WIDTH = 128


class RetinaUNet(nn.Module):
    """Retina U-Net and its two comparison variants.

    Args:
        ufpn: the backbone, built with the lateral width this detector's heads expect.
        num_classes: object classes K (no background).
        anchor_sizes: per detection level, A anchor sizes [A][D] in input voxels.
        level_strides: per detection level, D ints: input voxels per feature voxel.
        model: one of :data:`MODELS`.
        head_convs: hidden conv-norm-activation layers of each head.
        num_candidates: ATSS candidates per level and object.
        negative_ratio, min_negatives: hard negative mining (see ``classification_loss``).
        l1_weight: weight of an extra L1 loss on box deltas (0: GIoU only, as nnDetection).
        seg_weight: weight of the segmentation loss in the total.
        max_components: boxes kept per image by ``detunet`` (default 5 in 2D, 15 in 3D).
    """

    def __init__(
        self,
        *,
        ufpn: UFPN,
        num_classes: int,
        anchor_sizes: list[list[list[float]]],
        level_strides: list[list[int]],
        model: str = "retina_unet",
        head_convs: int = 2,
        num_candidates: int = 4,
        negative_ratio: float = 3.0,
        min_negatives: int = 4,
        l1_weight: float = 0.0,
        seg_weight: float = 1.0,
        max_components: int | None = None,
    ) -> None:
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
        self.model = model
        self.dim = ufpn.dim
        self.num_classes = num_classes
        self.ufpn = ufpn
        self.detects = model != "detunet"
        self.segments = model != "retina_net"
        if self.detects != bool(ufpn.detection_levels) or self.segments != ufpn.has_segmentation:
            raise ValueError(f"the U-FPN given does not fit model {model!r}: use from_plan")

        self.anchor_generator = AnchorGenerator(anchor_sizes, level_strides)
        self.coder = BoxCoder()
        self.matcher = ATSSMatcher(num_candidates=num_candidates)
        self._anchor_cache: dict[tuple, list[Tensor]] = {}
        num_anchors = self.anchor_generator.num_anchors_per_location
        if self.detects:
            width = ufpn.laterals[0].out_channels
            head = {"dim": self.dim, "in_channels": width, "width": width}
            head["num_convs"] = head_convs
            head["num_anchors"] = num_anchors
            self.classifier = ClassificationHead(num_classes=num_classes, **head)
            self.regressor = RegressionHead(**head)
        self.seg_loss = SegmentationLoss() if self.segments else None
        self.loss_options = {
            "negative_ratio": negative_ratio,
            "min_negatives": min_negatives,
            "l1_weight": l1_weight,
            "seg_weight": seg_weight,
        }
        self.max_components = max_components

    @classmethod
    def from_plan(cls, plan: Plan, model: str = "retina_unet", **overrides) -> RetinaUNet:
        """The detector of a plan; keyword arguments override the detector's options."""
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
        levels = list(plan.detection_levels) if model != "detunet" else []
        features = plan.topology.features_per_stage
        # heads as wide as the finest detection level (the costliest one), at most 128
        width = min(MAX_HEAD_WIDTH, features[min(levels)]) if levels else 0
        ufpn = UFPN.from_plan(
            plan,
            detection_levels=levels,
            lateral_width=width,
            finest_level=min(levels) if model == "retina_net" else 0,
            seg_channels=0 if model == "retina_net" else plan.num_classes + 1,
        )
        logger.info(
            "built %s for plan %s: levels %s, head width %d", model, plan.name, levels, width
        )
        return cls(
            ufpn=ufpn,
            num_classes=plan.num_classes,
            anchor_sizes=plan.anchors,
            level_strides=plan.level_strides(),
            model=model,
            **overrides,
        )

    def forward(self, images: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """Raw network outputs.

        Args:
            images: float [B, C, *spatial], spatial sizes divisible by the plan's total stride.

        Returns:
            ``"cls_logits"``: per detection level float [B, A*K, *s_l]; ``"box_deltas"``: per
            level float [B, A*2*D, *s_l]; ``"seg_logits"``: float [B, K + 1, *spatial]. Each
            key only where the variant has that output.
        """
        pyramid, seg_logits = self.ufpn(images)
        outputs: dict[str, Tensor | list[Tensor]] = {}
        if self.detects:
            outputs["cls_logits"] = self.classifier(pyramid)
            outputs["box_deltas"] = self.regressor(pyramid)
        if seg_logits is not None:
            outputs["seg_logits"] = seg_logits
        return outputs

    def anchors(self, outputs: dict, device: torch.device) -> tuple[Tensor, list[int]]:
        """All anchors float32 [N, 2*D] for these outputs, and the count per level (cached)."""
        shapes = tuple(tuple(x.shape[2:]) for x in outputs["cls_logits"])
        key = (shapes, str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = self.anchor_generator(shapes, device=device)
        per_level = self._anchor_cache[key]
        return torch.cat(per_level), [len(a) for a in per_level]

    @torch.no_grad()
    def match(
        self, anchors: Tensor, per_level: list[int], boxes: list[Tensor], labels: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Assign objects to anchors with ATSS, per image.

        Args:
            anchors: float [N, 2*D]; per_level: anchors per level.
            boxes: B float tensors [G_b, 2*D]; labels: B long tensors [G_b] (classes from 0).

        Returns:
            ``(anchor_labels long [B, N], matched_boxes float [B, N, 2*D])``: the class of
            the matched object or the matcher's BACKGROUND/IGNORE code, and its box (zeros
            where none).
        """
        all_labels, all_boxes = [], []
        for gt_boxes, gt_labels in zip(boxes, labels, strict=True):
            gt_boxes = gt_boxes.to(anchors)
            index = self.matcher(gt_boxes, anchors, per_level)
            safe = index.clamp(min=0)
            if len(gt_boxes):
                matched_labels = gt_labels.to(anchors.device).long()[safe]
                all_labels.append(torch.where(index >= 0, matched_labels, index))
                all_boxes.append(gt_boxes[safe])
            else:
                all_labels.append(index)
                all_boxes.append(torch.zeros_like(anchors))
        return torch.stack(all_labels), torch.stack(all_boxes)

    def compute_loss(self, outputs: dict, targets: dict) -> dict[str, Tensor]:
        """Named losses and their weighted sum ``"total"``.

        Args:
            outputs: as returned by :meth:`forward`.
            targets: ``"boxes"``: B float tensors [G_b, 2*D] in patch voxel coordinates;
                ``"labels"``: B long tensors [G_b]; ``"seg"``: long [B, *spatial], 0
                background, k + 1 for class k, -1 ignored. Images without objects are valid.

        Returns:
            ``"cls"``, ``"box_giou"`` (and ``"box_l1"``) for detecting variants, ``"seg"``
            for segmenting ones, and ``"total"``: float scalars.
        """
        options = self.loss_options
        losses: dict[str, Tensor] = {}
        if self.detects:
            anchors, per_level = self.anchors(outputs, outputs["cls_logits"][0].device)
            anchor_labels, matched_boxes = self.match(
                anchors, per_level, targets["boxes"], targets["labels"]
            )
            logits = flatten_levels(outputs["cls_logits"], self.num_classes)
            deltas = flatten_levels(outputs["box_deltas"], 2 * self.dim)
            losses["cls"] = classification_loss(
                logits, anchor_labels, options["negative_ratio"], options["min_negatives"]
            )
            losses.update(
                regression_loss(
                    deltas, anchors, anchor_labels, matched_boxes, self.coder, options["l1_weight"]
                )
            )
        if self.segments:
            seg = options["seg_weight"] * self.seg_loss(outputs["seg_logits"], targets["seg"])
            losses["seg"] = seg
        losses["total"] = sum(losses.values())
        return losses

    @torch.no_grad()
    def predict(
        self, images: Tensor, topk: int = 1000, min_score: float = 0.05, max_per_image: int = 300
    ) -> list[dict]:
        """Candidate boxes of every image (no NMS): forward, then :meth:`postprocess`."""
        outputs = self(images)
        return self.postprocess(
            outputs, images.shape[2:], topk=topk, min_score=min_score, max_per_image=max_per_image
        )

    @torch.no_grad()
    def postprocess(
        self,
        outputs: dict,
        image_shape,
        topk: int = 1000,
        min_score: float = 0.05,
        max_per_image: int = 300,
    ) -> list[dict]:
        """Raw candidate boxes from network outputs, before any NMS or clustering.

        Args:
            outputs: as returned by :meth:`forward`.
            image_shape: the D spatial sizes of the input patch.
            topk: most candidates per level and image, over all classes.
            min_score: lowest class probability kept (0.05, as torchvision's RetinaNet: lower
                scores add boxes by the hundred per tile that never survive clustering).
            max_per_image: most candidates per image over all levels, the best first; every
                tile of every mirror is a view, so this bounds what inference stores per view.

        Returns:
            B dicts: ``"boxes"`` float32 [N, 2*D] in patch voxel coordinates, clipped to the
            patch; ``"scores"`` float32 [N]; ``"labels"`` long [N] (classes from 0).
            ``detunet`` returns its component boxes instead (``topk``/``min_score`` unused).
        """
        if not self.detects:
            probabilities = torch.softmax(outputs["seg_logits"].float(), dim=1)
            return [component_boxes(p, self.max_components) for p in probabilities]

        anchors, per_level = self.anchors(outputs, outputs["cls_logits"][0].device)
        level_anchors = anchors.split(per_level)
        results = []
        for b in range(outputs["cls_logits"][0].shape[0]):
            parts = [
                self._level_candidates(cls[b : b + 1], deltas[b : b + 1], level, topk, min_score)
                for cls, deltas, level in zip(
                    outputs["cls_logits"], outputs["box_deltas"], level_anchors, strict=True
                )
            ]
            boxes, scores, labels = (torch.cat(p) for p in zip(*parts, strict=True))
            if len(scores) > max_per_image:
                scores, order = scores.topk(max_per_image)
                boxes, labels = boxes[order], labels[order]
            results.append(
                {"boxes": clip_boxes(boxes, image_shape), "scores": scores, "labels": labels}
            )
        return results

    def _level_candidates(
        self, cls: Tensor, deltas: Tensor, anchors: Tensor, topk: int, min_score: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Top-k (anchor, class) pairs of one level and image with score >= min_score."""
        scores = torch.sigmoid(flatten_level(cls, self.num_classes)[0].float()).flatten()
        keep = (scores >= min_score).nonzero(as_tuple=True)[0]
        scores = scores[keep]
        if len(scores) > topk:
            scores, order = scores.topk(topk)
            keep = keep[order]
        anchor_index = keep // self.num_classes
        deltas = flatten_level(deltas, 2 * self.dim)[0].float()[anchor_index]
        boxes = self.coder.decode(deltas, anchors[anchor_index])
        return boxes, scores, keep % self.num_classes
