"""Network topology for a patch, its detection levels, and its memory/compute estimate.

The topology follows nnU-Net v2: ``get_pool_and_conv_props`` picks strides and kernel sizes
from the spacing and patch size (pool an axis while its feature map stays >= 4 voxels and its
spacing is within a factor 2 of the finest), and widths double per stage up to a cap. The
cost of a patch is the number of feature-map elements the network holds, counted by
dynamic-network-architectures' ``compute_conv_feature_map_size`` for the U-Net, plus the same
count for the detection heads, which the U-Net does not have.
"""

from __future__ import annotations

import numpy as np
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.experiment_planning.experiment_planners.network_topology import (
    get_pool_and_conv_props,
)
from torch import nn

from nndet.planning.plan import Topology

# Smallest edge of the bottleneck feature map, nnU-Net's value.
MIN_FEATURE_MAP_SIZE = 4
# Detection heads sit on P2-P5 by default, as in Retina U-Net (Jaeger et al. 2018).
DEFAULT_DETECTION_LEVELS = (2, 3, 4, 5)
# Conv blocks per head branch (classification and regression each) assumed by the estimate.
HEAD_CONVS = 2
CONVS_PER_STAGE = 2  # encoder and decoder, as nnU-Net


def build_topology(
    spacing: list[float], patch_size: list[int], base_features: int, max_features: int
) -> tuple[Topology, list[int]]:
    """The U-Net topology for a patch, and the patch padded to what the strides divide.

    Args:
        spacing: D target spacings of the network's axes.
        patch_size: D requested patch edges in voxels.
        base_features: width of the first stage; stage ``s`` has ``base * 2**s``.
        max_features: cap on the width of any stage.

    Returns:
        The topology and the patch size (each edge rounded up to a multiple of its total
        stride).
    """
    _, strides, kernels, patch, _ = get_pool_and_conv_props(
        list(spacing), list(patch_size), MIN_FEATURE_MAP_SIZE, 999_999
    )
    num_stages = len(strides)
    topology = Topology(
        features_per_stage=[min(base_features * 2**s, max_features) for s in range(num_stages)],
        kernel_sizes=[[int(k) for k in ks] for ks in kernels],
        strides=[[int(s) for s in ss] for ss in strides],
        n_conv_per_stage=[CONVS_PER_STAGE] * num_stages,
        n_conv_per_stage_decoder=[CONVS_PER_STAGE] * (num_stages - 1),
    )
    return topology, [int(p) for p in patch]


def shape_divisor(spacing: list[float], patch_size: list[int]) -> list[int]:
    """Per axis, the total stride the topology of this patch has (what the patch must divide)."""
    *_, divisor = get_pool_and_conv_props(
        list(spacing), list(patch_size), MIN_FEATURE_MAP_SIZE, 999_999
    )
    return [int(d) for d in divisor]


def detection_levels(topology: Topology, patch_size: list[int]) -> list[int]:
    """Decoder levels that carry detection heads.

    P2-P5 where the topology has them and their feature map is at least
    ``MIN_FEATURE_MAP_SIZE`` voxels along every axis. A small patch has fewer stages and
    therefore fewer levels; when none of P2-P5 exists, the coarsest existing level is used
    (P1, or P0 for a network of one stage).
    """
    levels = []
    for level in DEFAULT_DETECTION_LEVELS:
        if level >= topology.num_stages:
            break
        stride = topology.level_stride(level)
        if min(p // s for p, s in zip(patch_size, stride, strict=True)) >= MIN_FEATURE_MAP_SIZE:
            levels.append(level)
    if not levels:
        levels = [min(topology.num_stages - 1, DEFAULT_DETECTION_LEVELS[0])]
    return levels


def unet_feature_map_size(
    topology: Topology, patch_size: list[int], in_channels: int, out_channels: int
) -> int:
    """Feature-map elements of the U-Net for one sample, as nnU-Net v2 counts them."""
    dim = len(patch_size)
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    norm = nn.InstanceNorm2d if dim == 2 else nn.InstanceNorm3d
    # the meta device allocates no weights: building even a 30 M-parameter net is instant
    with torch.device("meta"):
        net = PlainConvUNet(
            input_channels=in_channels,
            n_stages=topology.num_stages,
            features_per_stage=topology.features_per_stage,
            conv_op=conv,
            kernel_sizes=topology.kernel_sizes,
            strides=topology.strides,
            n_conv_per_stage=topology.n_conv_per_stage,
            num_classes=out_channels,
            n_conv_per_stage_decoder=topology.n_conv_per_stage_decoder,
            conv_bias=True,
            norm_op=norm,
            norm_op_kwargs={"eps": 1e-5, "affine": True},
            nonlin=nn.LeakyReLU,
            nonlin_kwargs={"inplace": True},
        )
    return int(net.compute_conv_feature_map_size(list(patch_size)))


def head_feature_map_size(
    topology: Topology,
    patch_size: list[int],
    levels: list[int],
    head_channels: int,
    num_anchors: int,
    num_classes: int,
) -> int:
    """Feature-map elements of the detection heads for one sample.

    Counted in the same currency as the U-Net (one tensor per conv): per level, a lateral
    1x1 conv to ``head_channels``, ``HEAD_CONVS`` convs in each of the classification and
    regression branches, and the outputs (``A*K`` logits, ``A*2D`` box deltas).
    """
    dim = len(patch_size)
    per_voxel = head_channels * (1 + 2 * HEAD_CONVS) + num_anchors * (num_classes + 2 * dim)
    total = 0
    for level in levels:
        stride = topology.level_stride(level)
        voxels = np.prod([p // s for p, s in zip(patch_size, stride, strict=True)], dtype=np.int64)
        total += int(voxels) * per_voxel
    return total
