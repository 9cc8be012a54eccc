"""Training steps of every variant, loss decrease on a fixed batch, predictions, overfitting."""

from __future__ import annotations

import pytest
import torch
from model_plans import tiny_plan

from nndet.boxes.ops import box_iou
from nndet.model.detector import MODELS, RetinaUNet


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread, above all on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(dim: int, patch: int, num_classes: int = 2) -> tuple[torch.Tensor, dict]:
    """Two images: one with a bright cube of class 1, one empty (a valid training sample)."""
    generator = torch.Generator().manual_seed(0)
    images = 0.1 * torch.randn(2, 1, *[patch] * dim, generator=generator)
    lo, hi = patch // 4, patch // 4 + patch // 3
    region = (0, 0, *[slice(lo, hi)] * dim)
    images[region] += 1.0
    seg = torch.zeros(2, *[patch] * dim, dtype=torch.long)
    seg[(0, *[slice(lo, hi)] * dim)] = 2
    targets = {
        "boxes": [
            torch.tensor([[lo] * dim + [hi] * dim], dtype=torch.float),
            torch.zeros(0, 2 * dim),
        ],
        "labels": [torch.tensor([1]), torch.zeros(0, dtype=torch.long)],
        "seg": seg,
    }
    return images, targets


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_every_variant_trains_one_step_on_mixed_empty_and_full_images(dim, model, one_thread):
    torch.manual_seed(0)
    net = RetinaUNet.from_plan(tiny_plan(dim=dim, patch=16), model=model)
    images, targets = _batch(dim, 16)

    losses = net.compute_loss(net(images), targets)
    losses["total"].backward()

    expected = {"retina_unet": {"cls", "box_giou", "seg"}, "retina_net": {"cls", "box_giou"}}
    assert set(losses) == expected.get(model, {"seg"}) | {"total"}
    assert all(torch.isfinite(v) for v in losses.values())
    # every parameter takes part: no dead decoder stage or seg layer in any variant
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("dim", [2, 3])
def test_losses_decrease_on_a_fixed_batch(dim, one_thread):
    torch.manual_seed(0)
    net = RetinaUNet.from_plan(tiny_plan(dim=dim, patch=16), l1_weight=1.0)
    images, targets = _batch(dim, 16)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    history = []
    for _ in range(8):
        losses = net.compute_loss(net(images), targets)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})

    for name in ("cls", "box_giou", "box_l1", "seg", "total"):
        assert history[-1][name] < history[0][name], (name, history)


def test_a_training_step_runs_under_autocast(one_thread):
    net = RetinaUNet.from_plan(tiny_plan(dim=2, patch=16))
    images, targets = _batch(2, 16)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = net.compute_loss(net(images), targets)
    losses["total"].backward()

    assert losses["total"].dtype == torch.float32 and torch.isfinite(losses["total"])


def test_predictions_are_raw_candidates_inside_the_patch(one_thread):
    torch.manual_seed(0)
    plan = tiny_plan(dim=3, patch=16, num_classes=2)
    net = RetinaUNet.from_plan(plan).eval()
    images, _ = _batch(3, 16)

    predictions = net.predict(images, topk=7, min_score=0.005)

    assert len(predictions) == 2
    for p in predictions:
        n = len(p["scores"])
        assert 0 < n <= 7 * len(plan.detection_levels)
        assert p["boxes"].shape == (n, 6) and p["labels"].shape == (n,)
        assert (p["scores"] >= 0.005).all() and set(p["labels"].tolist()) <= {0, 1}
        assert (p["boxes"] >= 0).all() and (p["boxes"] <= 16).all()
    assert net.predict(images, min_score=1.1)[0]["boxes"].shape == (0, 6)


def test_a_tiny_retina_unet_overfits_one_toy_image(one_thread):
    # a 64x64 image with one bright 12 px square, as the simplest detection task there is
    torch.manual_seed(0)
    net = RetinaUNet.from_plan(tiny_plan(dim=2, patch=64, num_classes=1))
    image = 0.1 * torch.randn(1, 1, 64, 64)
    image[0, 0, 20:32, 30:42] += 1.0
    box = torch.tensor([[20.0, 30, 32, 42]])
    seg = torch.zeros(1, 64, 64, dtype=torch.long)
    seg[0, 20:32, 30:42] = 1
    targets = {"boxes": [box], "labels": [torch.tensor([0])], "seg": seg}
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    for _ in range(100):
        losses = net.compute_loss(net(image), targets)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()

    prediction = net.eval().predict(image)[0]
    top = prediction["scores"].argmax()
    assert box_iou(prediction["boxes"][top : top + 1], box).item() > 0.5
    assert prediction["labels"][top].item() == 0 and prediction["scores"][top] > 0.5


def test_a_single_confident_output_decodes_to_its_own_anchor_in_anisotropic_3d():
    # oracle: with zero deltas the candidate is the anchor at (index + 0.5) * stride
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    plan = tiny_plan(dim=3, num_classes=3, strides=strides, patch_size=[8, 32, 32])
    net = RetinaUNet.from_plan(plan)
    outputs = {
        key: [torch.zeros_like(x) for x in value] if isinstance(value, list) else value
        for key, value in net(torch.zeros(2, 1, 8, 32, 32)).items()
    }
    for cls in outputs["cls_logits"]:
        cls.fill_(-10.0)
    level, anchor, label, index = 1, 2, 1, (1, 3, 2)  # level P2: stride (2, 4, 4)
    outputs["cls_logits"][level][1, anchor * 3 + label, index[0], index[1], index[2]] = 10.0

    predictions = net.postprocess(outputs, [8, 32, 32], min_score=0.5)

    stride = plan.level_strides()[level]
    center = torch.tensor([(i + 0.5) * s for i, s in zip(index, stride, strict=True)])
    half = torch.tensor(plan.anchors[level][anchor]) / 2
    expected = torch.cat([center - half, center + half]).clamp(min=0)
    expected = torch.minimum(expected, torch.tensor([8.0, 32, 32] * 2))
    assert len(predictions[0]["boxes"]) == 0
    assert torch.allclose(predictions[1]["boxes"], expected[None])
    assert predictions[1]["labels"].tolist() == [label]
