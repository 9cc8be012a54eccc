"""Fakes for the inference tests: a blob detector standing in for a trained network."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from nndet.planning.plan import Normalization, Plan, Topology


class BlobModel:
    """Detects bright blobs (channel 0 above ``threshold``) as boxes of their components.

    The class is 1 for blobs brighter than 1.5, else 0. The score falls with the distance of
    the blob from the patch's low end on axis 0 (``slope``), so it is not mirror-symmetric:
    a flipped tile scores the same blob differently. ``jitter`` widens every box by that
    many voxels on its high side along the last axis (a model that is slightly off).
    """

    def __init__(self, threshold: float = 0.5, slope: float = 0.3, jitter: float = 0.0):
        self.threshold = threshold
        self.slope = slope
        self.jitter = jitter
        self.batch_shapes: list[tuple[int, ...]] = []

    def predict(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        self.batch_shapes.append(tuple(images.shape))
        return [self._predict_one(image[0].float().cpu().numpy()) for image in images]

    def _predict_one(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        dim = image.ndim
        components, _ = ndimage.label(image > self.threshold)
        boxes, scores, labels = [], [], []
        for i, slc in enumerate(ndimage.find_objects(components)):
            box = [float(s.start) for s in slc] + [float(s.stop) for s in slc]
            box[-1] += self.jitter
            mean = float(image[components == i + 1].mean())
            centre = (box[0] + box[dim]) / 2 / image.shape[0]
            boxes.append(box)
            scores.append(min(0.95, 0.9 * (1 - self.slope * centre)))
            labels.append(1 if mean > 1.5 else 0)
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 2 * dim),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.long),
        }


def make_plan(dim: int, patch_size: list[int], data_dim: int | None = None) -> Plan:
    """A minimal plan: only dim, data_dim, patch and batch size matter to inference."""
    data_dim = data_dim or dim
    return Plan(
        name="2d" if dim == 2 else "3d",
        dim=dim,
        data_dim=data_dim,
        spacing=[1.0] * data_dim,
        transpose=list(range(data_dim)),
        normalization=[Normalization("zscore")],
        patch_size=list(patch_size),
        batch_size=3,
        topology=Topology([8], [[3] * dim], [[1] * dim], [1], [1]),
        detection_levels=[0],
        anchors=[[[4.0] * dim]],
        anchor_iou=0.5,
        num_classes=2,
        num_modalities=1,
        epochs=1,
        iters_per_epoch=1,
    )


def identity_properties(shape: list[int]) -> dict:
    """Preprocessing properties of a case stored exactly as it was read."""
    dim = len(shape)
    return {
        "transpose": list(range(dim)),
        "crop_bbox": [[0, n] for n in shape],
        "shape_after_crop": list(shape),
        "shape_after_resample": list(shape),
        "original_spacing": [1.0] * dim,
        "original_geometry": {
            "shape": list(shape),
            "spacing": [1.0] * dim,
            "origin": [0.0] * dim,
            "direction": np.eye(dim).flatten().tolist(),
        },
    }


def paint(shape: list[int], boxes: list[list[int]], values: list[float] | None = None):
    """float32 [1, *shape]: zero, with each box filled by its value (default 1)."""
    image = np.zeros((1, *shape), dtype=np.float32)
    dim = len(shape)
    for i, box in enumerate(boxes):
        region = tuple(slice(box[a], box[a + dim]) for a in range(dim))
        image[(0, *region)] = 1.0 if values is None else values[i]
    return image
