"""``nndet_prep``: check raw data, fingerprint, plan, split and preprocess a task."""

from __future__ import annotations

import argparse
import sys

from nndet.cli.common import default_processes, run_command, setup_logging
from nndet.data.paths import task_dir
from nndet.preprocessing.prepare import RawDataError, prepare_task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nndet_prep",
        description=(
            "Check a raw task, compute its fingerprint, plan 2D/3D configurations for a budget,"
            " split it into five folds and preprocess every training case. Reads"
            " $NNDET_DATA/TaskNNN_*/ and writes TaskNNN_*/preprocessed/."
        ),
    )
    parser.add_argument("task", help="the task: Task001, Task001_Name, 001 or 1")
    parser.add_argument(
        "--target",
        choices=("gpu", "cpu"),
        default="gpu",
        help="plan for a GPU of --gpu-memory GB (default) or for a small CPU network",
    )
    parser.add_argument("--gpu-memory", type=float, default=8.0, help="GPU memory budget in GB")
    parser.add_argument(
        "-np",
        "--num-processes",
        type=int,
        default=default_processes(),
        help="worker processes (default: %(default)s, the cores of this machine, at most 8)",
    )
    parser.add_argument("--plan", nargs="+", help="preprocess only these plans (default: all)")
    parser.add_argument("--check-only", action="store_true", help="only check the raw data")
    parser.add_argument(
        "--overwrite", action="store_true", help="recompute the fingerprint and every case"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        folder = task_dir(args.task)
        print(f"nndet_prep: reading {folder}")
        try:
            report = prepare_task(
                folder,
                target=args.target,
                gpu_memory_gb=args.gpu_memory,
                num_processes=args.num_processes,
                overwrite=args.overwrite,
                check_only=args.check_only,
                plan_names=args.plan,
            )
        except RawDataError as err:
            print(
                f"the raw data of {folder.name} have problems; nothing was written:\n{err}",
                file=sys.stderr,
            )
            return 1
        if args.check_only:
            print(f"{folder.name}: the raw data passed every check")
            return 0
        _print_summary(report)
        return 0

    run_command(body)


def _print_summary(report) -> None:
    plans = report.plans
    print(f"wrote {report.preprocessed_dir}: fingerprint.json, plans.json, splits.json")
    for name, plan in sorted(plans.plans.items()):
        mark = " (default)" if name == plans.default else ""
        print(
            f"  plan {name}{mark}: spacing {plan.spacing}, patch {plan.patch_size},"
            f" batch {plan.batch_size}, levels P{plan.detection_levels},"
            f" anchor IoU {plan.anchor_iou:.2f}, {report.num_cases} cases in"
            f" {report.preprocessed_dir / name}"
        )
    for line in report.lost_or_split:
        print(f"  warning: {line}")


if __name__ == "__main__":
    main()
