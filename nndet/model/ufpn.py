"""U-FPN: an nnU-Net encoder and decoder whose intermediate levels feed the detection heads.

The encoder and the decoder stages are dynamic-network-architectures' ``PlainConvEncoder`` and
``UNetDecoder`` (instance norm, leaky ReLU, as nnU-Net). The decoder's own forward returns
logits only, so :class:`UFPN` runs its modules stage by stage (transposed conv, concatenate
the skip, conv stage) and keeps every level's features. Level ``P_s`` is the resolution of
encoder stage ``s``: ``P0`` is full resolution, the bottleneck is ``P_{S-1}`` for S stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from dynamic_network_architectures.building_blocks.helper import (
    convert_dim_to_conv_op,
    get_matching_instancenorm,
)
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import Tensor, nn

from nndet.planning.plan import Plan


class UFPN(nn.Module):
    """Encoder, decoder down to a finest level, and 1x1 lateral convs on the detection levels.

    Args:
        dim: spatial dimensions D (2 or 3).
        in_channels: input channels C (modalities).
        features_per_stage: channels of every encoder stage (S entries).
        kernel_sizes: conv kernel per stage, S entries of D ints.
        strides: stride per stage, S entries of D ints (the first is usually all ones).
        n_conv_per_stage: convs per encoder stage (S entries).
        n_conv_per_stage_decoder: convs per decoder stage (S - 1 entries, coarse to fine as
            in dynamic-network-architectures).
        detection_levels: levels whose features go to the detection heads (may be empty).
        lateral_width: channels every detection level is brought to by its lateral conv.
        finest_level: the decoder stops at this level; decoder stages above it are not built.
        seg_channels: channels of the segmentation logits on ``finest_level`` (usually the
            classes plus background); 0 builds no segmentation layer.
    """

    def __init__(
        self,
        *,
        dim: int,
        in_channels: int,
        features_per_stage: Sequence[int],
        kernel_sizes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        n_conv_per_stage: Sequence[int],
        n_conv_per_stage_decoder: Sequence[int],
        detection_levels: Sequence[int] = (),
        lateral_width: int = 0,
        finest_level: int = 0,
        seg_channels: int = 0,
    ) -> None:
        super().__init__()
        num_stages = len(features_per_stage)
        levels = list(detection_levels)
        if any(not 0 <= level < num_stages for level in levels):
            raise ValueError(f"detection levels {levels} outside the {num_stages} stages")
        if levels and finest_level > min(levels):
            raise ValueError(f"finest level {finest_level} above detection levels {levels}")
        self.dim = dim
        self.num_stages = num_stages
        self.detection_levels = levels
        self.finest_level = finest_level
        self.features_per_stage = list(features_per_stage)

        conv_op = convert_dim_to_conv_op(dim)
        # nnU-Net's defaults: conv bias, affine instance norm with eps 1e-5, leaky ReLU 0.01.
        common = {
            "conv_bias": True,
            "norm_op": get_matching_instancenorm(conv_op),
            "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "nonlin": nn.LeakyReLU,
            "nonlin_kwargs": {"inplace": True},
        }
        self.encoder = PlainConvEncoder(
            in_channels,
            num_stages,
            list(features_per_stage),
            conv_op,
            [list(k) for k in kernel_sizes],
            [list(s) for s in strides],
            list(n_conv_per_stage),
            return_skips=True,
            **common,
        )
        decoder = UNetDecoder(
            self.encoder,
            max(seg_channels, 1),
            list(n_conv_per_stage_decoder),
            deep_supervision=False,
            **{k: v for k, v in common.items() if k != "conv_bias"},
        )
        self.decoder = _trim_decoder(decoder, num_stages - 1 - finest_level, seg_channels > 0)
        self.laterals = nn.ModuleList(
            conv_op(features_per_stage[level], lateral_width, kernel_size=1) for level in levels
        )
        self.apply(InitWeights_He(1e-2))

    @classmethod
    def from_plan(cls, plan: Plan, **overrides) -> UFPN:
        """The U-FPN of a plan; keyword arguments override the plan's choices."""
        topology = plan.topology
        kwargs = {
            "dim": plan.dim,
            "in_channels": plan.num_modalities,
            "features_per_stage": topology.features_per_stage,
            "kernel_sizes": topology.kernel_sizes,
            "strides": topology.strides,
            "n_conv_per_stage": topology.n_conv_per_stage,
            "n_conv_per_stage_decoder": topology.n_conv_per_stage_decoder,
            "seg_channels": plan.num_classes + 1,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def has_segmentation(self) -> bool:
        return len(self.decoder.seg_layers) > 0

    def decode(self, images: Tensor) -> dict[int, Tensor]:
        """Features of every level from the bottleneck down to ``finest_level``.

        Args:
            images: float [B, C, *spatial].

        Returns:
            ``{level: float [B, features_per_stage[level], *spatial_level]}``.
        """
        skips = self.encoder(images)
        features = {self.num_stages - 1: skips[-1]}
        x = skips[-1]
        for s, (transpconv, stage) in enumerate(
            zip(self.decoder.transpconvs, self.decoder.stages, strict=True)
        ):
            x = stage(torch.cat((transpconv(x), skips[-(s + 2)]), dim=1))
            features[self.num_stages - 2 - s] = x
        return features

    def forward(self, images: Tensor) -> tuple[list[Tensor], Tensor | None]:
        """Detection features and segmentation logits.

        Args:
            images: float [B, C, *spatial].

        Returns:
            ``(pyramid, seg_logits)``: ``pyramid[i]`` is float [B, lateral_width, *spatial_i]
            on ``detection_levels[i]``; ``seg_logits`` is float [B, seg_channels, *spatial_f]
            on ``finest_level`` (full resolution when it is 0), or None without segmentation.
        """
        features = self.decode(images)
        pyramid = [
            lateral(features[level])
            for lateral, level in zip(self.laterals, self.detection_levels, strict=True)
        ]
        seg_logits = None
        if self.has_segmentation:
            seg_logits = self.decoder.seg_layers[-1](features[self.finest_level])
        return pyramid, seg_logits


def _trim_decoder(decoder: UNetDecoder, num_stages: int, keep_seg: bool) -> UNetDecoder:
    """Keep the first (coarsest) ``num_stages`` decoder stages and at most the last seg layer.

    A retina_net stops decoding at its finest detection level, so the finer stages would be
    parameters without gradients; the deep-supervision seg layers are unused here as well.
    """
    decoder.transpconvs = decoder.transpconvs[:num_stages]
    decoder.stages = decoder.stages[:num_stages]
    seg_layer = decoder.seg_layers[num_stages - 1] if keep_seg and num_stages > 0 else None
    decoder.seg_layers = nn.ModuleList([seg_layer] if seg_layer is not None else [])
    return decoder
