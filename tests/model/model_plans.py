"""Tiny hand-made plans for the model tests (no planner involved)."""

from __future__ import annotations

from nndet.planning.plan import Normalization, Plan, Topology


def tiny_plan(
    dim: int = 2,
    patch: int = 32,
    num_classes: int = 2,
    num_modalities: int = 1,
    features: tuple[int, ...] = (8, 16, 32, 32),
    detection_levels: tuple[int, ...] = (1, 2, 3),
    strides: list[list[int]] | None = None,
    patch_size: list[int] | None = None,
) -> Plan:
    """A plan with 4 stages of stride 2 (levels P0..P3) and 3 anchors per detection level."""
    num_stages = len(features)
    if strides is None:
        strides = [[1] * dim] + [[2] * dim for _ in range(num_stages - 1)]
    topology = Topology(
        features_per_stage=list(features),
        kernel_sizes=[[3] * dim for _ in range(num_stages)],
        strides=strides,
        n_conv_per_stage=[1] * num_stages,
        n_conv_per_stage_decoder=[1] * (num_stages - 1),
    )
    # anchors of 2, 3 and 4 feature voxels on each level
    anchors = [
        [[m * s for s in topology.level_stride(level)] for m in (2, 3, 4)]
        for level in detection_levels
    ]
    return Plan(
        name=f"{dim}d",
        dim=dim,
        data_dim=dim,
        spacing=[1.0] * dim,
        transpose=list(range(dim)),
        normalization=[Normalization("zscore")] * num_modalities,
        patch_size=patch_size or [patch] * dim,
        batch_size=2,
        topology=topology,
        detection_levels=list(detection_levels),
        anchors=anchors,
        anchor_iou=0.7,
        num_classes=num_classes,
        num_modalities=num_modalities,
        epochs=1,
        iters_per_epoch=1,
    )
