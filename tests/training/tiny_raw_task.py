"""A tiny raw 2D task written without nndet_example: squares (class 0) and crosses (class 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nndet.data.io import write_image

GEOMETRY = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0]}


def write_tiny_task(root: Path, num_cases: int = 10, size: int = 64, seed: int = 0) -> Path:
    """``root/Task900_Tiny`` with ``num_cases`` training images of ``size`` x ``size``."""
    rng = np.random.default_rng(seed)
    task = root / "Task900_Tiny"
    images, labels = task / "raw_splitted" / "imagesTr", task / "raw_splitted" / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    dataset = {"task": "Task900_Tiny", "name": "Tiny", "dim": 2, "modalities": {"0": "toy"},
               "labels": {"0": "square", "1": "cross"}, "test_labels": False}  # fmt: skip
    (task / "dataset.json").write_text(json.dumps(dataset))
    for index in range(num_cases):
        image = rng.uniform(0, 0.3, (size, size)).astype(np.float32)
        label = np.zeros((size, size), np.uint8)
        instances = {}
        for obj, (y, x) in enumerate([(8, 8), (size - 24, size - 20)][: 1 + index % 2], 1):
            cls = (index + obj) % 2
            patch = np.ones((12, 12), bool)
            if cls == 1:
                patch[:4, :4] = patch[:4, 8:] = patch[8:, :4] = patch[8:, 8:] = False
            image[y : y + 12, x : x + 12][patch] += 1.0
            label[y : y + 12, x : x + 12][patch] = obj
            instances[str(obj)] = cls
        write_image(image, images / f"case{index:03d}_0000.nii.gz", GEOMETRY)
        write_image(label, labels / f"case{index:03d}.nii.gz", GEOMETRY)
        (labels / f"case{index:03d}.json").write_text(json.dumps({"instances": instances}))
    return task
