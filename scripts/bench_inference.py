"""Benchmark: inference time per case (2D and 3D, with and without mirroring) and WBC vs NMS.

Part 1 times :func:`nndet.inference.predictor.predict_case` (sliding window, every tile
through the network, consolidation with the default settings, boxes mapped to the original
image) on the test cases of the example tasks; reading and preprocessing the images are not
included. 2D: the trained Task101 model of ``--model-dir`` on freshly written Task101 test
cases (the same generator, seed and counts as the model's ``dataset.json`` records). 3D: an
untrained ``--target cpu`` Task104 model (seeded weights): its timing is that of a real
network of the plan, but untrained heads score many boxes, so its consolidation does more
work than a trained model's would. Calls with and without mirroring alternate case by case.

Part 2 re-consolidates the stored validation views of the trained model's folds twice, with
weighted box clustering (``method="wbc"``) and with class-wise NMS (``method="nms"``), all
other settings the defaults, and scores both against the raw labels with the functions of
``nndet_sweep``: mAP@0.1, and the false positives scoring above 0.5 (a detection not matched
to an object of its class at IoU 0.1, with the evaluation's greedy matching).

    .venv/bin/python scripts/bench_inference.py --model-dir build/bench_model_101/retina_unet_2d
    .venv/bin/python scripts/bench_inference.py --model-dir DIR --cases 2 --skip-3d
    .venv/bin/python scripts/bench_inference.py --table build/bench_inference.json

Torch runs on ``--threads`` threads (default 1; see ``scripts/bench_training.py`` for why on
a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from nndet.data.dataset import list_cases, load_dataset_json
from nndet.data.example import example_task, write_example_task
from nndet.evaluation.folders import class_names_from_dataset_json
from nndet.evaluation.matching import match_case
from nndet.evaluation.metrics import MAIN_IOU, evaluate
from nndet.inference.consolidate import InferenceSettings
from nndet.inference.models import load_model_dir, trained_folds
from nndet.inference.predictor import predict_case
from nndet.inference.sweep import consolidate_case, load_cases, load_ground_truth
from nndet.model.detector import RetinaUNet
from nndet.planning.plan import load_plans
from nndet.preprocessing.preprocess import preprocess_case

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import CASE_COUNTS, load, prepare_examples  # noqa: E402

HIGH_SCORE = 0.5  # false positives above this score are the ones a reader would be shown


def time_cases(models, plan, cases, warmup: bool = True) -> dict:
    """Seconds per case of ``predict_case`` with and without mirroring, alternating order."""
    prepared = [(c.case_id, *preprocess_case(c, plan)) for c in cases]
    if warmup:  # first call pays for lazy initialisation (allocator, kernels)
        case_id, data, _, props = prepared[0]
        predict_case(models, data, props, plan, case_id=case_id, mirror=False)
    times: dict[str, list[float]] = {"mirror": [], "no_mirror": []}
    boxes: dict[str, list[int]] = {"mirror": [], "no_mirror": []}
    before = load()
    for i, (case_id, data, _, props) in enumerate(prepared):
        for mirror in (True, False) if i % 2 == 0 else (False, True):
            start = time.perf_counter()
            result = predict_case(models, data, props, plan, case_id=case_id, mirror=mirror)
            key = "mirror" if mirror else "no_mirror"
            times[key].append(time.perf_counter() - start)
            boxes[key].append(len(result.views.scores))
    shapes = [list(data.shape[1:]) for _, data, _, _ in prepared]
    return {"seconds": times, "raw_boxes": boxes, "stored_shapes": shapes,
            "load_before": before, "load_after": load()}  # fmt: skip


def example_like(model_dir: Path, root: Path) -> Path:
    """The example task the model was trained on, written again with its recorded options.

    It goes to ``root/model_task/``, apart from the smaller tasks of the training benchmark.
    """
    record = load_dataset_json(model_dir)
    spec = example_task(record["task"])
    root = root / "model_task"
    task_dir = root / spec.folder
    options = record.get("example", {})
    counts = ("num_training", "num_test")
    written = load_dataset_json(task_dir) if (task_dir / "dataset.json").is_file() else {}
    if any(written.get(k) != record[k] for k in counts) or written.get("example") != options:
        write_example_task(spec.number, root, record["num_training"], record["num_test"],
                           noise=options.get("noise", 0.5), seed=options.get("seed", 0),
                           full=options.get("full", False), overwrite=True)  # fmt: skip
    return task_dir


def timing(args: argparse.Namespace) -> dict:
    out = {}
    if args.model_dir is not None:
        plan, _, models, folds = load_model_dir(args.model_dir, device="cpu")
        task_dir = example_like(args.model_dir, args.data_dir)
        cases = list_cases(task_dir, "Ts", plan.num_modalities)[: args.cases]
        print(f"2D: {task_dir.name}, trained folds {folds}, {len(cases)} test cases", flush=True)
        out["2d"] = {"task": task_dir.name, "model": f"trained, folds {folds}",
                     "plan": _describe(plan), **time_cases(models, plan, cases)}  # fmt: skip
    if not args.skip_3d:
        task_dir = prepare_examples(args.data_dir, {104: CASE_COUNTS[104]})[104]
        plan = load_plans(task_dir / "preprocessed" / "plans.json").get("3d")
        torch.manual_seed(0)
        model = RetinaUNet.from_plan(plan).eval()
        cases = list_cases(task_dir, "Ts", plan.num_modalities)[: args.cases]
        print(f"3D: {task_dir.name}, untrained, {len(cases)} test cases", flush=True)
        out["3d"] = {"task": task_dir.name, "model": "untrained (seed 0)",
                     "plan": _describe(plan), **time_cases([model], plan, cases)}  # fmt: skip
    return out


def _describe(plan) -> str:
    return f"{plan.name}, patch {'x'.join(map(str, plan.patch_size))}, batch {plan.batch_size}"


def positive_counts(predictions, truth, recall: float = 0.5) -> dict[str, int | None]:
    """Detections against objects of their class at IoU 0.1, with the evaluation's matching.

    Returns:
        ``fp_above`` / ``tp_above``: false / true positives scoring above
        :data:`HIGH_SCORE`; ``fp_at_recall``: false positives scoring at or above the
        detection that first reaches ``recall`` of all objects (None if never reached), a
        count that does not depend on how the two methods scale their scores.
    """
    thresholds = torch.tensor([MAIN_IOU], dtype=torch.float64)
    scores, hits, num_objects = [], [], 0
    for case_id, (gt_boxes, gt_labels) in truth.items():
        boxes, case_scores, labels = predictions[case_id]
        case = match_case(boxes.double(), case_scores.double(), labels.long(), gt_boxes.double(),
                          gt_labels.long(), thresholds)  # fmt: skip
        scores.append(case.scores)
        hits.append(case.matched[0])
        num_objects += len(gt_labels)
    scores, hits = torch.cat(scores), torch.cat(hits)
    high = scores > HIGH_SCORE
    order = torch.sort(scores, descending=True, stable=True).indices
    true_pos = hits[order].cumsum(0)
    reached = torch.nonzero(true_pos >= recall * num_objects).flatten()
    fp_at_recall = None
    if len(reached):
        last = int(reached[0])
        fp_at_recall = int((~hits[order][: last + 1]).sum())
    return {"fp_above": int((high & ~hits).sum()), "tp_above": int((high & hits).sum()),
            "fp_at_recall": fp_at_recall}  # fmt: skip


def wbc_vs_nms(model_dir: Path, labels_dir: Path) -> dict:
    """Both consolidations of the stored validation views, scored the same way."""
    folds = trained_folds(model_dir)
    cases = load_cases(model_dir, folds, None)
    truth = load_ground_truth(labels_dir, [c.views.case_id for c in cases])
    names = class_names_from_dataset_json(model_dir / "dataset.json")
    out = {"folds": folds, "num_cases": len(cases), "labels": str(labels_dir),
           "num_objects": sum(len(labels) for _, labels in truth.values())}  # fmt: skip
    for method in ("wbc", "nms"):
        settings = InferenceSettings(method=method)
        start = time.perf_counter()
        predictions = {c.views.case_id: consolidate_case(c, settings) for c in cases}
        seconds = time.perf_counter() - start
        metrics = evaluate(predictions, truth, names)
        counts = positive_counts(predictions, truth)
        out[method] = {"settings": settings.to_dict(), "mAP@0.1": metrics["mAP@0.1"],
                       "AP@0.1": metrics["AP@0.1"], "CPM": metrics["FROC@0.1"]["CPM"],
                       "fp_above_0.5": counts["fp_above"], "tp_above_0.5": counts["tp_above"],
                       "fp_at_half_recall": counts["fp_at_recall"],
                       "boxes": sum(len(p[1]) for p in predictions.values()),
                       "consolidation_s_per_case": seconds / len(cases)}  # fmt: skip
    return out


def tables(result: dict) -> str:
    lines = ["| data | model | plan | cases | s/case, mirrored | s/case, not mirrored | ratio "
             "| raw boxes/case, mirrored | load avg (1 min) |", "|" + "---|" * 9]  # fmt: skip
    for name, row in result.get("timing", {}).items():
        mirror = statistics.median(row["seconds"]["mirror"])
        plain = statistics.median(row["seconds"]["no_mirror"])
        raw = statistics.median(row["raw_boxes"]["mirror"])
        cells = [f"{name} ({row['task']})", row["model"], row["plan"],
                 str(len(row["seconds"]["mirror"])), f"{mirror:.2f}", f"{plain:.2f}",
                 f"{mirror / plain:.1f}x", f"{raw:.0f}",
                 f"{row['load_before'][0]:.1f}-{row['load_after'][0]:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    compare = result.get("wbc_vs_nms")
    if compare:
        head = ["consolidation", "mAP@0.1", "CPM", "false positives > 0.5",
                "true positives > 0.5", "false positives at 50% recall", "boxes kept",
                "s/case"]  # fmt: skip
        lines += ["", f"Validation views of folds {compare['folds']}: {compare['num_cases']} "
                  f"cases, {compare['num_objects']} objects", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
        for method in ("wbc", "nms"):
            row = compare[method]
            cells = [method.upper(), f"{row['mAP@0.1']:.3f}", f"{row['CPM']:.3f}",
                     str(row["fp_above_0.5"]), str(row["tp_above_0.5"]),
                     str(row["fp_at_half_recall"]), str(row["boxes"]),
                     f"{row['consolidation_s_per_case']:.3f}"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="trained 2D example model folder (<model>_<plan>); without it "
                             "the 2D timing and the WBC/NMS comparison are skipped")  # fmt: skip
    parser.add_argument("--labels", type=Path, default=None,
                        help="raw labels of the validation cases (default: labelsTr of the "
                             "example task written again under --data-dir)")  # fmt: skip
    parser.add_argument("--cases", type=int, default=3, help="test cases timed per task")
    parser.add_argument("--skip-3d", action="store_true", help="no 3D timing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--data-dir", type=Path, default=Path("build/bench_training_data"))
    parser.add_argument("--json", type=Path, default=Path("build/bench_inference.json"))
    parser.add_argument("--table", type=Path, default=None, help="reprint a saved --json result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    if args.table is not None:
        print(tables(json.loads(args.table.read_text())))
        return
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "cpu_count": os.cpu_count(), "torch": torch.__version__}
    result["timing"] = timing(args)
    if args.model_dir is not None:
        labels = (
            args.labels or example_like(args.model_dir, args.data_dir) / "raw_splitted/labelsTr"
        )
        print(f"WBC vs NMS on the validation views of {args.model_dir}", flush=True)
        result["wbc_vs_nms"] = wbc_vs_nms(args.model_dir, labels)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"\nraw results: {args.json}\n")
    print(tables(result))


if __name__ == "__main__":
    main()
