"""detunet's boxes: connected components of the softmax map."""

from __future__ import annotations

import torch

from nndet.model.components import component_boxes


def _probabilities(semantic: torch.Tensor, num_classes: int, peak: dict) -> torch.Tensor:
    """Softmax-like map [K+1, *s]: 0.6 on the argmax class, with given peaks per voxel."""
    probs = torch.full((num_classes + 1, *semantic.shape), 0.4 / num_classes)
    probs.scatter_(0, semantic[None], 0.6)
    for index, (cls, value) in peak.items():
        probs[(cls, *index)] = value
    return probs


def test_components_give_boxes_classes_and_peak_scores_in_2d():
    semantic = torch.zeros(20, 20, dtype=torch.long)
    semantic[2:5, 3:9] = 1  # class 0, 18 px
    semantic[10:16, 10:12] = 2  # class 1, 12 px
    probs = _probabilities(semantic, 2, {(3, 4): (1, 0.9)})

    result = component_boxes(probs)

    assert result["boxes"].tolist() == [[2, 3, 5, 9], [10, 10, 16, 12]]
    assert result["labels"].tolist() == [0, 1]
    assert torch.allclose(result["scores"], torch.tensor([0.9, 0.6]))


def test_only_the_largest_components_are_kept():
    semantic = torch.zeros(8, 40, 40, dtype=torch.long)
    for i in range(20):  # 20 separate cubes of growing size along axis 2
        semantic[1 : 2 + i % 5, 2 * (i // 5) * 4 : 2 * (i // 5) * 4 + 2, 2 * i : 2 * i + 1] = 1
    probs = _probabilities(semantic, 1, {})

    result = component_boxes(probs)
    limited = component_boxes(probs, max_components=3)

    sizes = [(b[3] - b[0]) * (b[4] - b[1]) * (b[5] - b[2]) for b in result["boxes"].tolist()]
    assert len(sizes) == 15 and min(sizes) >= 2 * 2  # the 5 smallest (1 voxel deep) dropped
    assert len(limited["boxes"]) == 3 and all(b[3] - b[0] == 5 for b in limited["boxes"].tolist())


def test_an_empty_segmentation_gives_no_boxes():
    probs = _probabilities(torch.zeros(16, 16, dtype=torch.long), 2, {})

    result = component_boxes(probs)

    assert result["boxes"].shape == (0, 4) and len(result["scores"]) == 0
