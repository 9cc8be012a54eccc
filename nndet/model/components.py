"""Boxes from a segmentation: the detection step of the ``detunet`` variant.

The Retina U-Net paper compares its detector with a U-Net whose boxes come from the
connected components of the softmax output; this module is that step.
"""

from __future__ import annotations

import cc3d
import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from nndet.data.instances import instance_boxes

# Components kept per image, as the Retina U-Net paper's DetU-Net baseline (Jaeger et al.
# 2018): the 5 (2D) or 15 (3D) largest.
MAX_COMPONENTS = {2: 5, 3: 15}


def component_boxes(probabilities: Tensor, max_components: int | None = None) -> dict:
    """Boxes around the connected components of one image's segmentation.

    Args:
        probabilities: float [K + 1, *spatial] softmax output, channel 0 background.
        max_components: largest components kept over all classes; default 5 (2D) or 15 (3D).

    Returns:
        ``{"boxes": float [N, 2*D], "scores": float [N], "labels": long [N]}`` on the device
        of ``probabilities``: a component's label is its class (from 0), its score its
        highest probability of that class. Components are fully connected (8 in 2D, 26 in
        3D) within one class of the argmax map.
    """
    dim = probabilities.ndim - 1
    if max_components is None:
        max_components = MAX_COMPONENTS[dim]
    probs = probabilities.detach().float().cpu().numpy()
    semantic = probs.argmax(axis=0).astype(np.uint16)

    components = cc3d.connected_components(semantic, connectivity=8 if dim == 2 else 26)
    num = int(components.max())
    ids = np.arange(1, num + 1)
    sizes = np.bincount(components.ravel(), minlength=num + 1)[1:]
    keep = ids[np.argsort(-sizes, kind="stable")[:max_components]]

    boxes_by_id = instance_boxes(components)
    classes = ndimage.maximum(semantic, components, keep).astype(np.int64) if num else []
    boxes, scores, labels = [], [], []
    for component, cls in zip(keep.tolist(), np.atleast_1d(classes).tolist(), strict=True):
        boxes.append(boxes_by_id[component])
        scores.append(float(ndimage.maximum(probs[cls], components, component)))
        labels.append(cls - 1)

    device = probabilities.device
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 2 * dim),
        "scores": torch.tensor(scores, dtype=torch.float32, device=device),
        "labels": torch.tensor(labels, dtype=torch.long, device=device),
    }
