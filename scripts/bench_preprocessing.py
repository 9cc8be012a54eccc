"""Benchmark: nndet's preprocessing against nnunetv2's on the same Task104 volumes.

Each pipeline runs in its own subprocess (one case after the other, one process each), so that
its peak resident memory is its own. Per case we time read + preprocess + write, and take the
peak RSS of that case (``/proc/self/clear_refs`` resets the high-water mark between cases).
nnunetv2 gets the class (semantic) maps derived from the instance maps as labels, its default
3d_fullres settings (cubic images, linear per-class segmentation, separate z for anisotropic
spacing), and the same target spacing and CT statistics as nndet.

    .venv/bin/python scripts/bench_preprocessing.py                 # Task104 --full, 100 cases
    .venv/bin/python scripts/bench_preprocessing.py --num-cases 20  # a quicker run
    .venv/bin/python scripts/bench_preprocessing.py --task-dir nndet_data/Task104_ToyNodules3D
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_RATIO = 1.2  # the bound: no slower, and no more memory, than 1.2x nnunetv2


def _peak_reset() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- workers (run in subprocesses) -----------------------------------------------------------


def _run_nndet(cfg: dict, out: Path):
    from nndet.data.dataset import list_cases
    from nndet.planning.plan import Plan
    from nndet.preprocessing.preprocess import preprocess_case
    from nndet.preprocessing.storage import CaseStore

    plan = Plan.from_dict(cfg["plan"])
    store = CaseStore(out)
    for case in list_cases(cfg["task_dir"], "Tr", plan.num_modalities):
        if case.case_id in cfg["cases"]:
            yield (
                case.case_id,
                lambda c=case: store.save_case(
                    c.case_id, *preprocess_case(c, plan), plan.patch_size
                ),
            )


def _run_nnunet(cfg: dict, out: Path):
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(cfg["nnunet_plans"])
    config = plans.get_configuration("3d_fullres")
    preprocessor = DefaultPreprocessor(verbose=False)
    images = Path(cfg["task_dir"]) / "raw_splitted" / "imagesTr"
    for case_id in cfg["cases"]:
        files = [str(images / f"{case_id}_0000.nii.gz")]
        seg = str(Path(cfg["semantic_dir"]) / f"{case_id}.nii.gz")
        yield (
            case_id,
            lambda f=files, s=seg, c=case_id: preprocessor.run_case_save(
                str(out / c), f, s, plans, config, cfg["nnunet_dataset"]
            ),
        )


def worker(which: str, config_path: Path) -> None:
    """Run one pipeline over the cases and print its measurements as JSON."""
    cfg = json.loads(config_path.read_text())
    out = Path(cfg["work"]) / f"out_{which}"
    out.mkdir(parents=True, exist_ok=True)
    jobs = list((_run_nndet if which == "nndet" else _run_nnunet)(cfg, out))  # imports happen here
    baseline = _rss_mb()
    per_case, can_reset = {}, _peak_reset()
    start = time.perf_counter()
    for case_id, job in jobs:
        _peak_reset()
        t0 = time.perf_counter()
        job()
        per_case[case_id] = {"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb()}
    total = time.perf_counter() - start
    print(json.dumps({"per_case": per_case, "total_s": total, "baseline_mb": baseline,
                      "per_case_peaks": can_reset}))  # fmt: skip


# --- set-up (untimed) --------------------------------------------------------------------------


def _make_task(root: Path, num_cases: int | None) -> Path:
    from nndet.data.example import write_example_task

    return write_example_task("Task104", root, num_train=num_cases, num_test=0, full=True)


def _prepare(task_dir: Path, work: Path, num_cases: int | None) -> dict:
    """Semantic label maps for nnunetv2, the shared target spacing and CT statistics."""
    from nndet.data.dataset import list_cases, read_case
    from nndet.data.io import write_image
    from nndet.planning.plan import Normalization, Plan, Topology

    cases = list_cases(task_dir, "Tr")[:num_cases]
    semantic = work / "labels_semantic"
    spacings, foreground = [], []
    rng = np.random.default_rng(0)
    for case in cases:
        images, imap, instances, geometry = read_case(case)
        classes = np.zeros(int(imap.max()) + 1, np.uint8)
        for obj_id, cls in instances.items():
            classes[obj_id] = cls + 1
        write_image(classes[imap], semantic / f"{case.case_id}.nii.gz", geometry)
        spacings.append(geometry["spacing"])
        values = images[0][imap > 0]
        foreground.append(rng.choice(values, min(len(values), 10000)) if len(values) else values)
    values = np.concatenate(foreground)
    stats = {"mean": float(values.mean()), "std": float(values.std()),
             "percentile_00_5": float(np.percentile(values, 0.5)),
             "percentile_99_5": float(np.percentile(values, 99.5))}  # fmt: skip
    spacing = np.median(np.array(spacings), axis=0).tolist()
    patch = [48, 128, 128]

    norm = Normalization("ct", stats["mean"], stats["std"], stats["percentile_00_5"],
                         stats["percentile_99_5"])  # fmt: skip
    topology = Topology([32, 64], [[3, 3, 3]] * 2, [[1, 1, 1], [2, 2, 2]], [2, 2], [2])
    plan = Plan(name="3d", dim=3, data_dim=3, spacing=spacing, transpose=[0, 1, 2],
                normalization=[norm], patch_size=patch, batch_size=2, topology=topology,
                detection_levels=[1], anchors=[[[4.0, 4.0, 4.0]]], anchor_iou=0.5,
                num_classes=2, num_modalities=1, epochs=1, iters_per_epoch=1)  # fmt: skip
    return {
        "task_dir": str(task_dir),
        "work": str(work),
        "semantic_dir": str(semantic),
        "cases": [c.case_id for c in cases],
        "plan": plan.to_dict(),
        "nnunet_plans": _nnunet_plans(spacing, patch, stats),
        "nnunet_dataset": {
            "labels": {"background": 0, "solid": 1, "part_solid": 2},
            "channel_names": {"0": "CT"},
            "file_ending": ".nii.gz",
            "numTraining": len(cases),
        },  # fmt: skip
    }


def _nnunet_plans(spacing: list[float], patch: list[int], stats: dict) -> dict:
    """A minimal nnU-Net plans dict with the defaults of its 3d_fullres configuration."""
    resampling = "resample_data_or_seg_to_shape"
    return {
        "dataset_name": "Dataset104_ToyNodules3D", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": [64, 192, 192],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": stats},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": patch, "median_image_size_in_voxels": [64, 192, 192],
            "spacing": spacing, "normalization_schemes": ["CTNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": resampling,
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0,
                                          "force_separate_z": None},
            "resampling_fn_seg": resampling,
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0,
                                         "force_separate_z": None},
            "resampling_fn_probabilities": resampling,
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "batch_dice": False,
            # only read when a network is built, never by the preprocessor
            "architecture": {"network_class_name": "unused", "arch_kwargs": {},
                             "_kw_requires_import": []},
        }},
    }  # fmt: skip


# --- driver ------------------------------------------------------------------------------------


def _run_worker(which: str, config_path: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--config", str(config_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{which} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: dict[str, dict], cases: list[str]) -> str:
    ours, ref = results["nndet"], results["nnunetv2"]
    peak = {k: max(c["peak_mb"] for c in r["per_case"].values()) for k, r in results.items()}
    time_ratio = ours["total_s"] / ref["total_s"]
    mem_ratio = peak["nndet"] / peak["nnunetv2"]
    work = {k: peak[k] - r["baseline_mb"] for k, r in results.items()}
    secs = {k: [r["per_case"][c]["seconds"] for c in cases] for k, r in results.items()}
    lines = [
        "| | nndet | nnunetv2 | ratio | target |",
        "|---|---|---|---|---|",
        f"| total time, {len(cases)} cases (s) | {ours['total_s']:.1f} | {ref['total_s']:.1f}"
        f" | {time_ratio:.2f} | <= {TARGET_RATIO} |",
        f"| time per case, median / max (s) | {np.median(secs['nndet']):.2f} /"
        f" {max(secs['nndet']):.2f} | {np.median(secs['nnunetv2']):.2f} /"
        f" {max(secs['nnunetv2']):.2f} | | |",
        f"| peak RSS of one case, max over cases (MB) | {peak['nndet']:.0f} |"
        f" {peak['nnunetv2']:.0f} | {mem_ratio:.2f} | <= {TARGET_RATIO} |",
        f"| same, above the RSS after imports (MB) | {work['nndet']:.0f} |"
        f" {work['nnunetv2']:.0f} | {work['nndet'] / work['nnunetv2']:.2f} | |",
        f"| RSS after imports (MB) | {ours['baseline_mb']:.0f} | {ref['baseline_mb']:.0f} | | |",
    ]
    verdict = "meets" if time_ratio <= TARGET_RATIO and mem_ratio <= TARGET_RATIO else "misses"
    return "\n".join(lines) + f"\n\nnndet {verdict} the 1.2x targets."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-dir", type=Path, help="an existing Task104 folder to use")
    parser.add_argument("--num-cases", type=int, help="training cases (default: all, 100)")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--table", type=Path, help="only print the table of a --json file")
    parser.add_argument("--worker", choices=["nndet", "nnunet"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.config)
        return
    if args.table:
        results = json.loads(args.table.read_text())
        print(_table(results, sorted(results["nndet"]["per_case"])))
        return

    with tempfile.TemporaryDirectory(prefix="bench_prep_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        task_dir = args.task_dir or _make_task(work / "raw", args.num_cases)
        cfg = _prepare(task_dir, work, args.num_cases)
        config_path = work / "bench_config.json"
        config_path.write_text(json.dumps(cfg))
        setup_s = time.perf_counter() - t0
        print(f"set-up: {len(cfg['cases'])} cases of {task_dir} in {setup_s:.0f} s;"
              f" target spacing {cfg['plan']['spacing']}")  # fmt: skip
        results = {"nndet": _run_worker("nndet", config_path),
                   "nnunetv2": _run_worker("nnunet", config_path)}  # fmt: skip
        print(_table(results, cfg["cases"]))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
