"""Box coder round trip and hand-computed deltas; anchor count, centres and ordering."""

from __future__ import annotations

import math

import pytest
import torch

from nndet.boxes.anchors import AnchorGenerator
from nndet.boxes.coder import BoxCoder
from nndet.boxes.ops import box_center, box_size


def _random_boxes(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(n, dim, generator=g, dtype=torch.float64) * 50
    size = torch.rand(n, dim, generator=g, dtype=torch.float64) * 20 + 1
    return torch.cat([lo, lo + size], dim=1)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("weights", [None, (10.0, 10.0, 10.0, 5.0, 5.0, 5.0)])
def test_coder_round_trip(dim, weights):
    if weights is not None:
        weights = weights[:dim] + weights[3 : 3 + dim]
    coder = BoxCoder(weights)
    anchors, targets = _random_boxes(64, dim, 0), _random_boxes(64, dim, 1)
    decoded = coder.decode(coder.encode(anchors, targets), anchors)
    assert torch.allclose(decoded, targets, atol=1e-9)


def test_coder_hand_computed_3d():
    coder = BoxCoder((1.0, 2.0, 1.0, 1.0, 1.0, 3.0))
    anchor = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0, 2.0]])  # centre (2,2,1), size (4,4,2)
    target = torch.tensor([[2.0, 0.0, 0.0, 6.0, 8.0, 2.0]])  # centre (4,4,1), size (4,8,2)
    delta = coder.encode(anchor, target)[0].tolist()
    assert delta == pytest.approx([2 / 4, 2 * 2 / 4, 0.0, 0.0, math.log(2), 0.0])


def test_coder_clamps_large_size_deltas():
    coder = BoxCoder(clamp=math.log(10))
    anchor = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    boxes = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), anchor)
    assert box_size(boxes)[0].tolist() == pytest.approx([20.0, 2.0])


def test_coder_rejects_weights_of_the_wrong_dimension():
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1.0, 1.0, 1.0, 1.0)).encode(_random_boxes(2, 3, 0), _random_boxes(2, 3, 1))


def test_anchor_count_per_level():
    gen = AnchorGenerator(
        sizes=[[[4, 4, 2], [8, 8, 4]], [[16, 16, 8], [32, 32, 8]]],
        strides=[[4, 4, 2], [8, 8, 4]],
    )
    anchors = gen([(3, 4, 5), (2, 2, 3)])
    assert gen.num_anchors_per_location == 2
    assert [a.shape for a in anchors] == [(3 * 4 * 5 * 2, 6), (2 * 2 * 3 * 2, 6)]


def test_anchor_centres_sizes_and_ordering_2d():
    gen = AnchorGenerator(sizes=[[[2.0, 6.0], [4.0, 4.0], [6.0, 2.0]]], strides=[[4, 8]])
    anchors = gen([(2, 3)])[0].view(2, 3, 3, 4)  # [*spatial, A, 2D]
    for i in range(2):
        for j in range(3):
            centre = torch.tensor([4 * i + 2.0, 8 * j + 4.0])
            for a, size in enumerate([[2.0, 6.0], [4.0, 4.0], [6.0, 2.0]]):
                box = anchors[i, j, a][None]
                assert torch.equal(box_center(box)[0], centre)
                assert box_size(box)[0].tolist() == size


def test_anchor_order_matches_a_head_output_permutation():
    # a head output [B, A*X, *spatial] -> [B, *spatial, A, X] -> flat; X = 2*D here holds
    # the anchors themselves, so flattening must reproduce the generator's order
    gen = AnchorGenerator(sizes=[[[2.0, 2.0, 2.0], [4.0, 2.0, 2.0]]], strides=[[2, 2, 1]])
    flat = gen([(2, 3, 2)])[0]
    a, x = 2, 6
    head = flat.view(2, 3, 2, a, x).permute(3, 4, 0, 1, 2).reshape(1, a * x, 2, 3, 2)
    again = head.view(1, a, x, 2, 3, 2).permute(0, 3, 4, 5, 1, 2).reshape(-1, x)
    assert torch.equal(again, flat)
    assert torch.equal(box_center(flat[:2]), torch.tensor([[1.0, 1.0, 0.5]] * 2))
    assert torch.equal(box_center(flat[2:3]), torch.tensor([[1.0, 1.0, 1.5]]))


def test_anchors_follow_device_and_dtype():
    gen = AnchorGenerator(sizes=[[[2.0, 2.0]]], strides=[[1, 1]])
    anchors = gen([(2, 2)], dtype=torch.float64)[0]
    assert anchors.dtype == torch.float64


def test_anchor_generator_rejects_unequal_anchor_counts():
    with pytest.raises(ValueError, match="same number"):
        AnchorGenerator(sizes=[[[2.0, 2.0]], [[2.0, 2.0], [3.0, 3.0]]], strides=[[1, 1], [2, 2]])
