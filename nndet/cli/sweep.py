"""``nndet_sweep``: tune the inference settings of a trained model on its validation cases."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

from nndet.cli.common import default_processes, run_command, setup_logging
from nndet.data.paths import data_root
from nndet.inference.consolidate import InferenceSettings
from nndet.inference.models import resolve_model_dir
from nndet.inference.sweep import DEFAULT_METRIC, NAMED_METRICS, PLAN_NAME, SEARCH_GRID, sweep

DESCRIPTION = f"""\
Tune how the boxes of all views (tiles, mirrors, folds) are consolidated, on the
validation cases of the trained folds, without running the network again: the
mirroring, the NMS IoU within one view, the IoU of weighted box clustering across
views and the minimum box size are searched one after another (coordinate-wise) to
maximise a metric; then the score threshold with the best F1 is chosen as the
operating point. Writes <model>_<plan>/{PLAN_NAME}, which nndet_predict uses.
Reads $NNDET_MODELS/TaskNNN_*/<model>_<plan>/fold<K>/val_views/ and the labels in
$NNDET_DATA/TaskNNN_*/raw_splitted/labelsTr. See documentation/sweep.md."""

EPILOG = """\
example:
  nndet_sweep Task101                      # every trained fold of the only model
  nndet_sweep 101 --plan 2d --folds 0 1 --metric mAP@0.1:0.5"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nndet_sweep",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", help="the task: Task001, Task001_Name, 001 or 1")
    parser.add_argument(
        "--plan", help="plan name (default: the only trained one, else the task's default)"
    )
    parser.add_argument(
        "--model", help="model name (default: the only trained one, else retina_unet)"
    )
    parser.add_argument(
        "--folds", type=int, nargs="+", metavar="K",
        help="folds whose validation cases are used (default: every trained fold)",
    )  # fmt: skip
    parser.add_argument(
        "--metric", default=DEFAULT_METRIC,
        help=f"metric to maximise: {', '.join(NAMED_METRICS)} or mAP@T for an IoU "
        f"threshold T (default {DEFAULT_METRIC})",
    )  # fmt: skip
    parser.add_argument(
        "--labels", metavar="DIR",
        help="labels of the validation cases (default: the task's raw_splitted/labelsTr)",
    )  # fmt: skip
    parser.add_argument(
        "-p", "--processes", type=int, default=default_processes(),
        help="processes that consolidate cases in parallel (default: the cores, at most 8)",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    return parser


def _progress(items: Iterable, total: int) -> Iterable:
    return tqdm(items, total=total, desc="settings", unit="setting", file=sys.stderr)


def _value(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_comparison(record: dict[str, Any]) -> str:
    """The metric and the tuned settings before and after the sweep, as a table."""
    default = InferenceSettings().to_dict()
    rows = [(record["metric"], record["metric_default"], record["metric_tuned"])]
    rows += [(name, default[name], record["settings"][name]) for name, _ in SEARCH_GRID]
    lines = [f"{'':<18}{'default':>10}{'tuned':>10}"]
    lines += [f"{name:<18}{_value(a):>10}{_value(b):>10}" for name, a, b in rows]
    point = record["operating_point"]
    if record["score_threshold"] is not None:
        lines.append(
            f"operating point: score >= {record['score_threshold']:.4f}: precision "
            f"{point['precision']:.3f}, recall {point['recall']:.3f}, F1 {point['f1']:.3f}, "
            f"{point['fp_per_case']:.2f} false positives per case"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        model_dir = resolve_model_dir(args.task, args.model, args.plan, needs="views")
        labels = args.labels or data_root() / model_dir.parent.name / "raw_splitted" / "labelsTr"
        print(f"nndet_sweep: reading {model_dir} and {labels}")
        record = sweep(
            model_dir, folds=args.folds, metric=args.metric, labels_dir=labels,
            progress=_progress, processes=args.processes,
        )  # fmt: skip
        folds = " ".join(str(f) for f in record["folds"])
        print(f"{record['num_cases']} validation cases of folds {folds}")
        print(format_comparison(record))
        print(f"wrote {model_dir / PLAN_NAME}")
        return 0

    run_command(body)
