"""Output shapes of the U-FPN, every head and every level, for 2D and 3D plans."""

from __future__ import annotations

import pytest
import torch
from model_plans import tiny_plan

from nndet.model.detector import MODELS, RetinaUNet
from nndet.model.heads import ClassificationHead, flatten_level
from nndet.model.ufpn import UFPN


@pytest.mark.parametrize("dim", [2, 3])
def test_ufpn_decodes_every_level_down_to_full_resolution(dim):
    plan = tiny_plan(dim=dim, patch=16)
    ufpn = UFPN.from_plan(plan)
    features = ufpn.decode(torch.randn(2, 1, *[16] * dim))

    assert sorted(features) == [0, 1, 2, 3]
    for level, x in features.items():
        expected = [16 // s for s in plan.topology.level_stride(level)]
        assert list(x.shape) == [2, plan.topology.features_per_stage[level], *expected]


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_every_head_and_level_has_the_planned_shape(dim, model):
    plan = tiny_plan(dim=dim, patch=32 if dim == 2 else 16, num_classes=2, num_modalities=2)
    net = RetinaUNet.from_plan(plan, model=model)
    patch = plan.patch_size
    outputs = net(torch.randn(2, 2, *patch))

    a, k = plan.num_anchors, plan.num_classes
    if model == "detunet":
        assert "cls_logits" not in outputs and "box_deltas" not in outputs
    else:
        assert len(outputs["cls_logits"]) == len(plan.detection_levels)
        for cls, deltas, stride in zip(
            outputs["cls_logits"], outputs["box_deltas"], plan.level_strides(), strict=True
        ):
            spatial = [p // s for p, s in zip(patch, stride, strict=True)]
            assert list(cls.shape) == [2, a * k, *spatial]
            assert list(deltas.shape) == [2, a * 2 * dim, *spatial]
    if model == "retina_net":
        assert "seg_logits" not in outputs
    else:
        assert list(outputs["seg_logits"].shape) == [2, k + 1, *patch]


def test_retina_net_builds_no_decoder_stage_above_its_finest_level():
    plan = tiny_plan(dim=2, detection_levels=(2, 3))
    net = RetinaUNet.from_plan(plan, model="retina_net")
    features = net.ufpn.decode(torch.randn(1, 1, 32, 32))

    assert sorted(features) == [2, 3]
    assert len(net.ufpn.decoder.stages) == 1 and len(net.ufpn.decoder.seg_layers) == 0


def test_classifier_starts_at_the_foreground_prior():
    head = ClassificationHead(dim=2, in_channels=8, num_anchors=3, num_classes=2, width=8)
    scores = torch.sigmoid(head([torch.randn(2, 8, 6, 6)])[0])

    assert torch.allclose(scores, torch.full_like(scores, 0.01), atol=0.005)


@pytest.mark.parametrize("dim", [2, 3])
def test_flattened_head_rows_follow_the_anchor_order(dim):
    # channel a*X + x at position p holds the code 1000*p + 10*a + x
    a, x_dim, spatial = 3, 4, [2, 3, 2][:dim]
    positions = torch.arange(int(torch.tensor(spatial).prod())).reshape(spatial)
    codes = torch.stack([1000 * positions + 10 * i + j for i in range(a) for j in range(x_dim)])[
        None
    ].float()

    rows = flatten_level(codes, x_dim)[0]

    expected = torch.tensor(
        [
            [1000 * p + 10 * i + j for j in range(x_dim)]
            for p in range(len(positions.flatten()))
            for i in range(a)
        ],
        dtype=torch.float,
    )
    assert torch.equal(rows, expected)


def test_unknown_model_name_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="retina_unet"):
        RetinaUNet.from_plan(tiny_plan(), model="mask_rcnn")


def test_the_bare_ufpn_is_a_segmentation_network_of_the_same_backbone():
    # the reference a benchmark sets a detector's training step against
    plan = tiny_plan(dim=2, patch=32)
    bare = UFPN.from_plan(plan)
    detector = RetinaUNet.from_plan(plan)
    pyramid, seg_logits = bare(torch.randn(2, 1, 32, 32))
    seg_logits.sum().backward()

    assert pyramid == [] and list(seg_logits.shape) == [2, plan.num_classes + 1, 32, 32]
    backbone = {k for k in detector.ufpn.state_dict() if not k.startswith("laterals")}
    assert backbone == set(bare.state_dict())
