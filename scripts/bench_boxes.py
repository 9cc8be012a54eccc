"""Benchmark of nndet's NMS and WBC against MONAI's NMS and a full-IoU-matrix greedy NMS.

Every measurement runs in its own subprocess, so that its peak memory can be read from
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's resident high-water mark): the
reported peak is the increase of that mark during the timed call over the mark after imports,
data generation and a small warm-up. tracemalloc would not see torch's allocations.

MONAI is a benchmark-only extra, never a runtime dependency of nndet. Make a separate venv
that sees the project venv's packages and add MONAI without its dependencies:

    .venv/bin/python -m venv build/bench_venv
    echo "import site; site.addsitedir('$(.venv/bin/python -c \
        'import site; print(site.getsitepackages()[0])')')" \
        > build/bench_venv/lib/python3.11/site-packages/nndet_main_venv.pth
    build/bench_venv/bin/pip install --no-deps monai
    build/bench_venv/bin/python scripts/bench_boxes.py

Without MONAI the script runs the other methods and marks MONAI as skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import zlib

import torch

METHODS = ("nndet_nms", "nndet_wbc", "monai_nms", "full_matrix_nms")
IOU_THRESHOLD = 0.5
NUM_OBJECTS = 300  # "a few hundred object centres"
VOLUME = (256.0, 512.0, 512.0)  # a CT-like volume, voxels
FULL_MATRIX_MAX_BOXES = 20_000  # 20k^2 float32 = 1.6 GB; 100k^2 would be 40 GB


def clustered_boxes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 3D boxes jittered around ``NUM_OBJECTS`` objects, as ensembled predictions are.

    Objects have sizes of 5-40 voxels; each prediction moves the centre by a normal jitter of
    10% of the object size per axis and scales each side by ``exp(N(0, 0.1))``. Scores are
    uniform in [0, 1).
    """
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(NUM_OBJECTS, 3, generator=g) * torch.tensor(VOLUME)
    size = 5 + torch.rand(NUM_OBJECTS, 3, generator=g) * 35
    which = torch.randint(0, NUM_OBJECTS, (n,), generator=g)
    c = centre[which] + torch.randn(n, 3, generator=g) * 0.1 * size[which]
    s = size[which] * torch.exp(torch.randn(n, 3, generator=g) * 0.1)
    return torch.cat([c - s / 2, c + s / 2], dim=1), torch.rand(n, generator=g)


def full_matrix_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """The plain greedy NMS: N x N IoU matrix, then one pass over the boxes by score."""
    from nndet.boxes.ops import box_iou

    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    removed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in range(len(boxes)):
        if not removed[i]:
            keep.append(i)
            removed |= iou[i] > threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def _runner(method: str):
    if method == "nndet_nms":
        from nndet.boxes.nms import nms

        return lambda b, s: nms(b, s, IOU_THRESHOLD)
    if method == "nndet_wbc":
        from nndet.boxes.wbc import weighted_box_clustering

        def wbc(b, s):
            n = len(b)
            labels = torch.zeros(n, dtype=torch.long)
            views = torch.arange(n) % 8  # e.g. 2 models x 4 mirrors
            return weighted_box_clustering(b, s, labels, views, torch.ones(n), 8.0, IOU_THRESHOLD)[
                0
            ]

        return wbc
    if method == "monai_nms":
        from monai.data.box_utils import non_max_suppression

        return lambda b, s: non_max_suppression(b, s, IOU_THRESHOLD)
    if method == "full_matrix_nms":
        return lambda b, s: full_matrix_nms(b, s, IOU_THRESHOLD)
    raise ValueError(f"unknown method {method}")


def measure_one(method: str, n: int, repeats: int) -> dict:
    """Time and peak memory of one method on n boxes, inside this process."""
    run = _runner(method)
    warm_boxes, warm_scores = clustered_boxes(500, seed=1)
    run(warm_boxes, warm_scores)
    boxes, scores = clustered_boxes(n)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = run(boxes, scores)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # NMS methods return indices: a checksum of the kept set shows they agree box for box
    kept = out.sort().values if method != "nndet_wbc" else None
    return {
        "method": method,
        "n": n,
        "seconds": min(times),
        "cpu_seconds": min(cpu_times),
        "peak_mb": (after - before) / 1024,  # ru_maxrss is in KiB on Linux
        "out": len(out),
        "kept_crc": None if kept is None else zlib.crc32(kept.numpy().astype("int64").tobytes()),
    }


def measure(method: str, n: int, repeats: int, threads: int, timeout: float) -> dict:
    """Run :func:`measure_one` in a fresh subprocess."""
    command = [sys.executable, __file__, "--one", method, str(n), "--repeats", str(repeats)]
    command += ["--threads", str(threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "n": n, "skipped": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        return {"method": method, "n": n, "skipped": reason}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cell(result: dict) -> str:
    if "skipped" in result:
        return f"skipped ({result['skipped']})"
    return (
        f"{result['seconds']:.3f} s / {result['cpu_seconds']:.3f} s / "
        f"{result['peak_mb']:.0f} MB / {result['out']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per measurement (1: on a shared machine, OpenMP threads that wait "
        "for busy cores dominate every small op)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        torch.set_num_threads(args.threads)
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.repeats)))
        return

    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}")
    print(f"clustered 3D boxes around {NUM_OBJECTS} objects, IoU threshold {IOU_THRESHOLD}")
    print(
        "cells: wall time / CPU time (each the best of repeats) / peak memory increase / "
        "boxes out\n"
    )
    print("| boxes | " + " | ".join(METHODS) + " |")
    print("|---" * (len(METHODS) + 1) + "|")
    results = []
    for n in args.sizes:
        row = []
        for method in METHODS:
            if method == "full_matrix_nms" and n > FULL_MATRIX_MAX_BOXES:
                gb = n * n * 4 / 1e9
                result = {"method": method, "n": n, "skipped": f"N x N matrix {gb:.0f} GB"}
            else:
                result = measure(method, n, args.repeats, args.threads, args.timeout)
            row.append(result)
            results.append(result)
        print(f"| {n} | " + " | ".join(_cell(r) for r in row) + " |", flush=True)

    print()
    for n in args.sizes:
        by = {r["method"]: r for r in results if r["n"] == n and "seconds" in r}
        crcs = {m: r["kept_crc"] for m, r in by.items() if r["kept_crc"] is not None}
        same = "identical" if len(set(crcs.values())) == 1 else f"DIFFERENT: {crcs}"
        print(f"{n}: kept sets of {', '.join(crcs)}: {same}")
        ours = by.get("nndet_nms")
        for other, label in (("monai_nms", "MONAI NMS / nndet NMS"), ("nndet_wbc", "WBC / NMS")):
            if ours and other in by:
                wall = by[other]["seconds"] / ours["seconds"]
                cpu = by[other]["cpu_seconds"] / ours["cpu_seconds"]
                print(f"{n}: {label} time = {wall:.2f}x (CPU time {cpu:.2f}x)")
    print(
        f"an N x N float32 IoU matrix at {max(args.sizes)} boxes: "
        f"{max(args.sizes) ** 2 * 4 / 2**20:.0f} MB"
    )


if __name__ == "__main__":
    main()
