"""Benchmark: the training loop of the 2D and 3D example plans (``--target cpu``) on this CPU.

Three figures per plan, each from the real pieces of ``nndet_train``:

- iterations per second of the loop (``make_train_loader`` with background workers, then
  ``train_step``), for each ``--workers`` count;
- the share of the loop's time spent blocked in ``next(loader)`` (target: under 10% with 2
  workers on 2 cores);
- the detector's training step against the bare U-FPN of the same backbone (segmentation
  cross-entropy only) on the same batch: the detection overhead (target: at most 1.3x).

The workers counts run in alternating rounds, and the two steps alternate call by call, so
that a load change on a shared machine affects both sides alike. The first ``--warmup``
iterations of every round are dropped. The machine's load average is recorded beside every
figure.

Torch runs on ``--threads`` threads (default 1): on a 2-core machine where another job keeps
one core busy, two OpenMP threads wait on each other at every op, and the same step measured
here took 15x longer (8.0 s against 0.55 s for the 2D detector step). On an idle machine pass
``--threads 2``.

    .venv/bin/python scripts/bench_training.py                 # Task101 and Task104, ~4 min
    .venv/bin/python scripts/bench_training.py --tasks 101 --iters 10 --rounds 1
    .venv/bin/python scripts/bench_training.py --table build/bench_training.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nndet.data.example import example_task, write_example_task
from nndet.model.detector import RetinaUNet
from nndet.model.ufpn import UFPN
from nndet.planning.plan import Plan, load_plans
from nndet.planning.splits import load_splits
from nndet.preprocessing.prepare import prepare_task
from nndet.preprocessing.storage import CaseStore
from nndet.training.sampling import make_train_loader
from nndet.training.trainer import TrainConfig, build_optimizer, to_device, train_step

WAIT_TARGET = 0.10  # the loop waits for data in under 10% of its time (2 workers, 2 cores)
OVERHEAD_TARGET = 1.3  # detector step at most 1.3x the bare U-FPN step
# Small example tasks: enough cases for a fold's sampler, quick to write and preprocess.
CASE_COUNTS = {101: (40, 4), 104: (12, 3)}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def prepare_examples(root: Path, counts: dict[int, tuple[int, int]]) -> dict[int, Path]:
    """Write and preprocess (``target="cpu"``) the example tasks once; reuses what exists."""
    dirs = {}
    for number, (num_train, num_test) in counts.items():
        task_dir = root / example_task(number).folder
        if not (task_dir / "preprocessed" / "plans.json").is_file():
            write_example_task(number, root, num_train, num_test, overwrite=True)
            prepare_task(task_dir, target="cpu", num_processes=2)
        dirs[number] = task_dir
    return dirs


def default_plan(task_dir: Path) -> tuple[Plan, CaseStore, list[str]]:
    """The task's default plan, its store and fold 0's training cases."""
    plan = load_plans(task_dir / "preprocessed" / "plans.json").get(None)
    store = CaseStore(task_dir / "preprocessed" / plan.name)
    train_ids = load_splits(task_dir / "preprocessed" / "splits.json")[0]["train"]
    return plan, store, train_ids


def loop_round(plan, store, train_ids, workers: int, iters: int, warmup: int) -> dict:
    """``iters`` iterations of the real loop; per iteration the wait for data and the total."""
    torch.manual_seed(0)
    config = TrainConfig(task_dir=Path("."), model_dir=Path("."), fold=0, num_workers=workers)
    device = torch.device("cpu")
    module = RetinaUNet.from_plan(plan).train()
    optimizer = build_optimizer(module, config)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    waits, totals = [], []
    before = load()
    with make_train_loader(store, train_ids, plan, num_workers=workers, seed=0) as loader:
        for _ in range(iters + warmup):
            start = time.perf_counter()
            batch = next(loader)
            got = time.perf_counter()
            images, targets = to_device(batch, device)
            train_step(module, module, images, targets, optimizer, scaler, config, device)
            waits.append(got - start)
            totals.append(time.perf_counter() - start)
    waits, totals = waits[warmup:], totals[warmup:]
    return {"workers": workers, "wait_s": waits, "iter_s": totals,
            "load_before": before, "load_after": load()}  # fmt: skip


def bare_step(net: UFPN, images, seg, optimizer, config: TrainConfig) -> float:
    """The bare U-FPN's step, as ``train_step`` without the detection parts."""
    optimizer.zero_grad(set_to_none=True)
    _, logits = net(images)
    loss = F.cross_entropy(logits, seg.clamp(min=0))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
    optimizer.step()
    return float(loss.detach())


def step_comparison(plan, store, train_ids, reps: int, warmup: int) -> dict:
    """Detector step against the bare U-FPN step on one batch, alternating call by call."""
    torch.manual_seed(0)
    config = TrainConfig(task_dir=Path("."), model_dir=Path("."), fold=0)
    device = torch.device("cpu")
    with make_train_loader(store, train_ids, plan, num_workers=0, seed=0) as loader:
        images, targets = to_device(next(loader), device)
    detector, bare = RetinaUNet.from_plan(plan).train(), UFPN.from_plan(plan).train()
    det_opt, bare_opt = build_optimizer(detector, config), build_optimizer(bare, config)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    times: dict[str, list[float]] = {"detector": [], "bare_ufpn": []}
    before = load()
    for _ in range(reps + warmup):
        start = time.perf_counter()
        train_step(detector, detector, images, targets, det_opt, scaler, config, device)
        middle = time.perf_counter()
        bare_step(bare, images, targets["seg"], bare_opt, config)
        times["detector"].append(middle - start)
        times["bare_ufpn"].append(time.perf_counter() - middle)
    times = {k: v[warmup:] for k, v in times.items()}
    return {**times, "load_before": before, "load_after": load()}


def summarise(result: dict) -> dict:
    """Per plan: it/s and wait share per workers count, and the step ratio."""
    out = {}
    for task, record in result["tasks"].items():
        row = {"plan": record["plan"]}
        for workers in result["workers"]:
            rounds = [r for r in record["loop"] if r["workers"] == workers]
            waits = [w for r in rounds for w in r["wait_s"]]
            iters = [t for r in rounds for t in r["iter_s"]]
            row[f"it_per_s_w{workers}"] = len(iters) / sum(iters)
            row[f"wait_share_w{workers}"] = sum(waits) / sum(iters)
        steps = record["steps"]
        row["detector_s"] = statistics.median(steps["detector"])
        row["bare_ufpn_s"] = statistics.median(steps["bare_ufpn"])
        row["ratio"] = row["detector_s"] / row["bare_ufpn_s"]
        out[task] = row
    return out


def table(result: dict) -> str:
    workers = result["workers"]
    head = ["task (plan, patch, batch)"]
    head += [f"it/s, {w} worker{'s' * (w > 1)}" for w in workers]
    head += [f"wait share, {w} worker{'s' * (w > 1)}" for w in workers]
    head += ["detector step (s)", "bare U-FPN step (s)", "ratio", "load avg (1 min)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, row in summarise(result).items():
        record = result["tasks"][task]
        loads = [r["load_before"][0] for r in record["loop"]] + [r["load_after"][0] for r in
                 record["loop"]] + [record["steps"]["load_before"][0]]  # fmt: skip
        cells = [f"{task} ({row['plan']})"]
        cells += [f"{row[f'it_per_s_w{w}']:.2f}" for w in workers]
        cells += [f"{100 * row[f'wait_share_w{w}']:.1f}%" for w in workers]
        cells += [f"{row['detector_s']:.3f}", f"{row['bare_ufpn_s']:.3f}",
                  f"{row['ratio']:.2f}x", f"{min(loads):.1f}-{max(loads):.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    counts = {n: CASE_COUNTS[n] for n in args.tasks}
    dirs = prepare_examples(args.data_dir, counts)
    result = {"workers": args.workers, "iters": args.iters, "rounds": args.rounds,
              "warmup": args.warmup, "torch_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "torch": torch.__version__, "tasks": {}}  # fmt: skip
    for task_dir in dirs.values():
        plan, store, train_ids = default_plan(task_dir)
        desc = f"{plan.name}, {'x'.join(map(str, plan.patch_size))}, batch {plan.batch_size}"
        print(f"{task_dir.name}: plan {desc}, {len(train_ids)} training cases", flush=True)
        loop = []
        for r in range(args.rounds):
            for workers in args.workers:
                loop.append(loop_round(plan, store, train_ids, workers, args.iters, args.warmup))
                it_s = len(loop[-1]["iter_s"]) / sum(loop[-1]["iter_s"])
                print(f"  round {r}, {workers} workers: {it_s:.2f} it/s", flush=True)
        steps = step_comparison(plan, store, train_ids, args.reps, args.warmup)
        result["tasks"][task_dir.name] = {"plan": desc, "loop": loop, "steps": steps}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[101, 104],
                        choices=sorted(CASE_COUNTS))  # fmt: skip
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iters", type=int, default=20, help="measured iterations per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per workers")
    parser.add_argument("--reps", type=int, default=15, help="measured steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="iterations dropped per round")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: see the docstring)")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=Path("build/bench_training_data"))
    parser.add_argument("--json", type=Path, default=Path("build/bench_training.json"))
    parser.add_argument("--table", type=Path, default=None, help="reprint a saved --json result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    if args.table is not None:
        print(table(json.loads(args.table.read_text())))
        return
    torch.set_num_threads(args.threads)
    result = run(args)
    result["summary"] = summarise(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"\nraw results: {args.json}\n")
    print(table(result))
    for task, row in result["summary"].items():
        wait = row.get("wait_share_w2")
        if wait is not None:
            verdict = "met" if wait < WAIT_TARGET else "missed"
            print(f"{task}: wait share with 2 workers {100 * wait:.1f}% "
                  f"(target < {100 * WAIT_TARGET:.0f}%: {verdict})")  # fmt: skip
        verdict = "met" if row["ratio"] <= OVERHEAD_TARGET else "missed"
        print(f"{task}: detector / bare U-FPN {row['ratio']:.2f}x "
              f"(target <= {OVERHEAD_TARGET}x: {verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
