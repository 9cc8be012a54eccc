"""Time ``nndet.inference.sweep.sweep`` on synthetic validation views the size of Task101's.

Task101 (2D, 320x320, ~6 objects of 20 px per image) has ~40 validation cases per fold
set; a 160 px patch with half overlap gives 9 tiles, and test-time mirroring 4 flips, so 36
views per case. Each view here holds ~5 jittered candidates per object it sees and 20
low-scoring random boxes, about 1300 raw boxes per case.

    .venv/bin/python scripts/bench_sweep.py [--cases 40] [--boxes-per-object 5] [--processes 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nndet.data.io import save_json, write_image
from nndet.inference.sweep import sweep
from nndet.inference.views import CaseViews, save_views

SHAPE, TILE, STARTS = 320, 160, (0, 80, 160)
MIRRORS = [[], [0], [1], [0, 1]]
TASK = "Task901_SweepBench"


def properties() -> dict:
    return {
        "transpose": [0, 1], "crop_bbox": [[0, SHAPE], [0, SHAPE]],
        "shape_after_crop": [SHAPE, SHAPE], "shape_after_resample": [SHAPE, SHAPE],
        "original_spacing": [1.0, 1.0],
        "original_geometry": {"shape": [SHAPE, SHAPE], "spacing": [1.0, 1.0]},
    }  # fmt: skip


def make_case(case_id: str, rng: np.random.Generator, per_object: int):
    """Ground-truth boxes and classes, and the views of a fake but plausible detector."""
    lows = rng.choice(np.arange(0, SHAPE - 20, 24), size=(6, 2))
    truth = np.concatenate([lows, lows + 20], axis=1).astype(np.float32)
    classes = rng.integers(0, 2, size=len(truth))
    tiles = [(a, b) for a in STARTS for b in STARTS]
    boxes, scores, labels, view_ids, table = [], [], [], [], []
    for t, (a, b) in enumerate(tiles):
        for m in range(len(MIRRORS)):
            view, first = len(table), sum(len(x) for x in boxes)
            table.append((0, m, t))
            inside = (truth[:, 0] >= a) & (truth[:, 2] <= a + TILE)
            inside &= (truth[:, 1] >= b) & (truth[:, 3] <= b + TILE)
            for box, cls in zip(truth[inside], classes[inside], strict=True):
                jitter = rng.normal(0, 2, size=(per_object, 4))
                boxes.append(box + jitter)
                scores.append(rng.uniform(0.3, 0.95, per_object))
                labels.append(np.full(per_object, cls))
            lo = rng.uniform([a, b], [a + TILE - 10, b + TILE - 10], size=(20, 2))
            boxes.append(np.concatenate([lo, lo + rng.uniform(2, 24, (20, 2))], axis=1))
            scores.append(rng.uniform(0.01, 0.4, 20))
            labels.append(rng.integers(0, 2, 20))
            view_ids.append(np.full(sum(len(x) for x in boxes) - first, view))
    table_t = torch.tensor(table)
    views = CaseViews(
        case_id=case_id,
        boxes=torch.from_numpy(np.concatenate(boxes)).float().clamp(0, SHAPE),
        scores=torch.from_numpy(np.concatenate(scores)).float(),
        labels=torch.from_numpy(np.concatenate(labels)).long(),
        view_ids=torch.from_numpy(np.concatenate(view_ids)).long(),
        view_model=table_t[:, 0], view_mirror=table_t[:, 1], view_tile=table_t[:, 2],
        mirror_axes=MIRRORS, tile_starts=torch.tensor(tiles),
        tile_size=torch.tensor([TILE, TILE]), image_shape=torch.tensor([SHAPE, SHAPE]),
        net_dim=2, num_models=1, properties=properties(),
    )  # fmt: skip
    return truth, classes, views


def write_bench_task(root: Path, num_cases: int, per_object: int) -> Path:
    rng = np.random.default_rng(0)
    labels = root / "data" / TASK / "raw_splitted" / "labelsTr"
    labels.mkdir(parents=True)
    model_dir = root / "models" / TASK / "retina_unet_2d"
    (model_dir / "fold0" / "val_views").mkdir(parents=True)
    num_boxes = 0
    for k in range(num_cases):
        truth, classes, views = make_case(f"case{k:03d}", rng, per_object)
        instance_map = np.zeros((SHAPE, SHAPE), dtype=np.uint8)
        for i, box in enumerate(truth.astype(int), start=1):
            instance_map[box[0] : box[2], box[1] : box[3]] = i
        write_image(instance_map, labels / f"case{k:03d}.nii.gz")
        instances = {str(i): int(c) for i, c in enumerate(classes, start=1)}
        save_json({"instances": instances}, labels / f"case{k:03d}.json")
        save_views(views, model_dir / "fold0" / "val_views")
        num_boxes += len(views.boxes)
    save_json({"model": "retina_unet", "plan": {"name": "2d"}}, model_dir / "plan.json")
    print(f"{num_cases} cases, {num_boxes / num_cases:.0f} raw boxes per case")
    return model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--boxes-per-object", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["NNDET_DATA"] = str(root / "data")
        os.environ["NNDET_MODELS"] = str(root / "models")
        model_dir = write_bench_task(root, args.cases, args.boxes_per_object)
        start = time.perf_counter()
        record = sweep(model_dir, processes=args.processes)
        elapsed = time.perf_counter() - start
    threads = torch.get_num_threads()
    print(f"{args.processes} processes, {threads} torch threads: {len(record['search'])} settings")
    print(f"took {elapsed:.1f} s; mAP@0.1 {record['metric_default']:.3f} -> "
          f"{record['metric_tuned']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
