"""Box coder: regression targets (deltas) of boxes relative to anchors, and back.

The parametrisation is the usual one of R-CNN/RetinaNet, per axis ``i`` of D:

    dc_i = w_i       * (c_target_i - c_anchor_i) / s_anchor_i
    ds_i = w_{D + i} * log(s_target_i / s_anchor_i)

with centres ``c``, sizes ``s = hi - lo`` and weights ``w`` (2*D floats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from nndet.boxes.ops import box_center, box_dim, box_size

# Largest size change a decoded delta may ask for: a factor 1000/16, as in torchvision and
# detectron2, so that exp() never overflows on an untrained network.
DEFAULT_SIZE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes as deltas to anchors and decode deltas back to boxes (2D and 3D).

    Args:
        weights: 2*D floats, the first D scale the centre deltas, the last D the log-size
            deltas. ``None`` means all ones (D is taken from the boxes).
        clamp: upper bound of the (unweighted) log-size delta when decoding.
    """

    def __init__(
        self, weights: Sequence[float] | None = None, clamp: float = DEFAULT_SIZE_CLAMP
    ) -> None:
        if weights is not None and len(weights) not in (4, 6):
            raise ValueError(f"BoxCoder weights need 4 (2D) or 6 (3D) values, got {weights}")
        self.weights = None if weights is None else tuple(float(w) for w in weights)
        self.clamp = clamp

    def _weights(self, boxes: Tensor) -> Tensor:
        d = box_dim(boxes)
        weights = self.weights if self.weights is not None else (1.0,) * (2 * d)
        if len(weights) != 2 * d:
            raise ValueError(f"BoxCoder has {len(weights)} weights but got {d}D boxes")
        return torch.as_tensor(weights, dtype=boxes.dtype, device=boxes.device)

    def encode(self, anchors: Tensor, targets: Tensor) -> Tensor:
        """Deltas of ``targets`` relative to ``anchors``.

        Args:
            anchors: float [N, 2*D] in corner format (positive sizes).
            targets: float [N, 2*D] in corner format (positive sizes), paired with anchors.

        Returns:
            float [N, 2*D]: ``(dc_0.., ds_0..)``.
        """
        d = box_dim(anchors)
        w = self._weights(anchors)
        size_a, size_t = box_size(anchors), box_size(targets)
        delta_c = w[:d] * (box_center(targets) - box_center(anchors)) / size_a
        delta_s = w[d:] * torch.log(size_t / size_a)
        return torch.cat([delta_c, delta_s], dim=-1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes from deltas relative to anchors (the inverse of :meth:`encode`).

        Args:
            deltas: float [N, 2*D] as returned by :meth:`encode` (or predicted).
            anchors: float [N, 2*D] in corner format.

        Returns:
            float [N, 2*D] boxes in corner format, in the dtype of ``deltas``.
        """
        d = box_dim(anchors)
        anchors = anchors.to(deltas.dtype)
        w = self._weights(deltas)
        size_a = box_size(anchors)
        center = box_center(anchors) + deltas[:, :d] / w[:d] * size_a
        size = size_a * torch.exp((deltas[:, d:] / w[d:]).clamp(max=self.clamp))
        return torch.cat([center - size / 2, center + size / 2], dim=-1)
