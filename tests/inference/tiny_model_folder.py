"""A tiny trained-looking model folder for the prediction tests (random weights, no training).

The folder has what ``nndet_train`` leaves (DESIGN.md, "Folders and files"):
``dataset.json``, ``plan.json`` and ``fold<K>/checkpoint_final.pt``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from nndet.data.io import save_json, write_image
from nndet.model.detector import RetinaUNet
from nndet.planning.plan import Normalization, Plan, Topology

CLASSES = {"0": "circle", "1": "donut"}
GEOMETRY_2D = {"spacing": [0.5, 0.8], "origin": [10.0, -4.0], "direction": [1.0, 0.0, 0.0, 1.0]}


def tiny_plan_2d(num_modalities: int = 1) -> Plan:
    """A 2D plan of 3 stages (widths 4, 8, 16), patch 32, detection on P2 only (8 x 8)."""
    topology = Topology(
        features_per_stage=[4, 8, 16],
        kernel_sizes=[[3, 3]] * 3,
        strides=[[1, 1], [2, 2], [2, 2]],
        n_conv_per_stage=[1, 1, 1],
        n_conv_per_stage_decoder=[1, 1],
    )
    return Plan(
        name="2d", dim=2, data_dim=2, spacing=[0.5, 0.8], transpose=[0, 1],
        normalization=[Normalization("zscore")] * num_modalities, patch_size=[32, 32],
        batch_size=2, topology=topology, detection_levels=[2],
        anchors=[[[8.0, 8.0], [12.0, 12.0]]], anchor_iou=0.6,
        num_classes=2, num_modalities=num_modalities, epochs=1, iters_per_epoch=1,
    )  # fmt: skip


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def make_model_folder(
    model_dir: Path, folds: tuple[int, ...] = (0,), num_modalities: int = 1
) -> Path:
    """Write a ``retina_unet_2d`` folder with random weights for ``folds``.

    The class logits' biases are set so that an untrained network proposes a few boxes on
    any image: one (anchor, class) channel scores about 0.7, another about 0.3, the rest
    nothing (below the candidates' minimum score 0.01). Every case then has boxes on both
    sides of the display threshold 0.5, and few enough to keep the tests fast.
    """
    plan = tiny_plan_2d(num_modalities)
    modalities = {str(m): "MR" for m in range(num_modalities)}
    save_json(
        {"task": "Task900_Tiny", "name": "Tiny", "dim": 2, "modalities": modalities,
         "labels": CLASSES, "test_labels": True},
        model_dir / "dataset.json",
    )  # fmt: skip
    save_json(
        {"nndet_version": "test", "model": "retina_unet", "plan": plan.to_dict()},
        model_dir / "plan.json",
    )
    for fold in folds:
        torch.manual_seed(fold)
        network = RetinaUNet.from_plan(plan)
        with torch.no_grad():
            bias = network.classifier.out.bias
            bias.fill_(-10.0)
            bias[0], bias[-1] = _logit(0.7), _logit(0.3)
        state = {"model": network.state_dict(), "model_name": "retina_unet"}
        (model_dir / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        torch.save(state, model_dir / f"fold{fold}" / "checkpoint_final.pt")
    return model_dir


def blob_image(seed: int, shape: tuple[int, int] = (48, 40)) -> np.ndarray:
    """Noise with two bright squares: float32 [*shape]."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 0.5, size=shape).astype(np.float32)
    image[8:16, 6:14] += 1.0
    image[30:38, 20:30] += 1.0
    return image


def write_images(folder: Path, names: list[str], geometry: dict = GEOMETRY_2D) -> list[Path]:
    """One blob image per file name (the ending chooses the format)."""
    paths = []
    for seed, name in enumerate(names):
        write_image(blob_image(seed), folder / name, geometry)
        paths.append(folder / name)
    return paths
