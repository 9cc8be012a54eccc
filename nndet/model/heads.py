"""Detection heads, shared across the pyramid levels: a classifier and a box regressor.

Each head is a few conv-norm-activation layers followed by one conv to ``A * X`` outputs per
position (X = K class logits, or 2*D box deltas). The channel layout is anchor-major
(channel ``a * X + x``), which :func:`flatten_level` turns into rows ``[position, anchor]``,
the order of :class:`nndet.boxes.anchors.AnchorGenerator`.
"""

from __future__ import annotations

import math

import torch
from dynamic_network_architectures.building_blocks.helper import convert_dim_to_conv_op
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import Tensor, nn

# Prior foreground probability of every anchor at initialisation, from RetinaNet (Lin et al.
# 2017): keeps the many easy negatives from swamping the first iterations.
PRIOR_PROBABILITY = 0.01


def _group_norm(channels: int) -> nn.GroupNorm:
    # 16 channels per group, as nnDetection's heads; the largest group count that divides.
    groups = max(1, channels // 16)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-5, affine=True)


class ConvHead(nn.Module):
    """``num_convs`` x (conv 3^D, group norm, leaky ReLU), then a conv to ``out_channels``.

    Args:
        dim: spatial dimensions D.
        in_channels: channels of every pyramid level.
        out_channels: outputs per position (A * X).
        width: channels of the hidden layers.
        num_convs: hidden conv-norm-activation layers.
        bias: initial bias of the output conv.
    """

    def __init__(
        self,
        *,
        dim: int,
        in_channels: int,
        out_channels: int,
        width: int,
        num_convs: int = 2,
        bias: float = 0.0,
    ) -> None:
        super().__init__()
        conv_op = convert_dim_to_conv_op(dim)
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers.append(conv_op(in_channels if i == 0 else width, width, 3, padding=1))
            layers.append(_group_norm(width))
            layers.append(nn.LeakyReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.out = conv_op(width if num_convs else in_channels, out_channels, 3, padding=1)
        self.body.apply(InitWeights_He(1e-2))
        # Small output weights, as RetinaNet: initial deltas near 0, scores near the prior.
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.constant_(self.out.bias, bias)

    def forward(self, pyramid: list[Tensor]) -> list[Tensor]:
        """Apply the shared head to every level: ``[B, C, *s_l]`` -> ``[B, out, *s_l]``."""
        return [self.out(self.body(x)) for x in pyramid]


class ClassificationHead(ConvHead):
    """Class logits: ``A * K`` channels, bias set for a foreground prior of 0.01."""

    def __init__(
        self, *, dim: int, in_channels: int, num_anchors: int, num_classes: int, **kwargs
    ) -> None:
        bias = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        super().__init__(
            dim=dim,
            in_channels=in_channels,
            out_channels=num_anchors * num_classes,
            bias=bias,
            **kwargs,
        )


class RegressionHead(ConvHead):
    """Box deltas: ``A * 2 * D`` channels (see :class:`nndet.boxes.coder.BoxCoder`)."""

    def __init__(self, *, dim: int, in_channels: int, num_anchors: int, **kwargs) -> None:
        super().__init__(
            dim=dim, in_channels=in_channels, out_channels=num_anchors * 2 * dim, **kwargs
        )


def flatten_level(output: Tensor, num_outputs: int) -> Tensor:
    """Rows per anchor of one level's head output.

    Args:
        output: float [B, A * X, *s] with anchor-major channels.
        num_outputs: X (K for the classifier, 2*D for the regressor).

    Returns:
        float [B, prod(s) * A, X], rows ordered position-major, then anchor.
    """
    b, _, *spatial = output.shape
    output = output.view(b, -1, num_outputs, *spatial)
    # [B, A, X, *s] -> [B, *s, A, X]
    order = [0, *range(3, 3 + len(spatial)), 1, 2]
    return output.permute(*order).reshape(b, -1, num_outputs)


def flatten_levels(outputs: list[Tensor], num_outputs: int) -> Tensor:
    """:func:`flatten_level` of every level, concatenated: float [B, sum_l N_l, X]."""
    return torch.cat([flatten_level(o, num_outputs) for o in outputs], dim=1)
