"""``nndet_eval``: detection metrics of a prediction folder against a labels folder."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence

from tqdm import tqdm

from nndet.evaluation.folders import evaluate_folders
from nndet.evaluation.metrics import FP_PER_CASE, IOU_THRESHOLDS
from nndet.evaluation.report import format_table

_RANGE = f"IoU {IOU_THRESHOLDS[0]:g} to {IOU_THRESHOLDS[-1]:g} in steps of 0.05"
_RATES = ", ".join(f"{r:g}" for r in FP_PER_CASE)
DESCRIPTION = f"""\
Evaluate detections against ground truth: per-class AP at IoU 0.1, mAP@0.1,
mAP@0.1:0.5 ({_RANGE}), FROC at {_RATES}
false positives per case with its CPM, and patient-level AP. Prints a table and
writes the metrics as JSON.

Predictions: a folder of CASE_boxes.json (as nndet_predict writes them).
Ground truth: a labels folder in the raw layout, CASE.nii.gz (instance map) +
CASE.json ({{"instances": {{"1": 0}}}}). Every case of the labels folder is evaluated.
Class names come from a dataset.json beside or above the labels folder, else the
class ids are used. See documentation/evaluation.md for the metrics and matching."""

EPILOG = """\
example:
  nndet_eval --pred nndet_models/Task101_ToyShapes/retina_unet_2d/test_predictions \\
             --gt nndet_data/Task101_ToyShapes/raw_splitted/labelsTs --iou 0.3 0.5"""


def _iou(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"IoU threshold must be in (0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nndet_eval",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pred", metavar="DIR", required=True, help="prediction folder")
    parser.add_argument("--gt", metavar="DIR", required=True, help="labels folder (raw layout)")
    parser.add_argument(
        "-o", "--output", metavar="FILE",
        help="metrics JSON to write (default: metrics.json in the prediction folder)",
    )  # fmt: skip
    parser.add_argument(
        "--iou", metavar="T", type=_iou, nargs="+", default=[],
        help="more IoU thresholds, each reported as AP@T and mAP@T",
    )  # fmt: skip
    parser.add_argument(
        "--dataset-json", metavar="FILE",
        help="dataset.json with the class names (default: found beside or above --gt)",
    )  # fmt: skip
    parser.add_argument(
        "--missing-as-empty", action="store_true",
        help="count labelled cases without a prediction file as cases without detections "
        "(default: an error that lists them)",
    )  # fmt: skip
    return parser


def _progress(items: Iterable, total: int) -> Iterable:
    return tqdm(items, total=total, desc="reading ground truth", unit="case", file=sys.stderr)


def run_folders(args: argparse.Namespace) -> None:
    """Evaluate ``--pred`` against ``--gt``, print the table and where the JSON went."""
    print(f"predictions:  {args.pred}")
    print(f"ground truth: {args.gt}")
    metrics, output = evaluate_folders(
        args.pred,
        args.gt,
        output=args.output,
        dataset_json=args.dataset_json,
        iou_thresholds_extra=args.iou,
        missing_as_empty=args.missing_as_empty,
        progress=_progress,
    )
    print(format_table(metrics))
    print(f"wrote {output}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_folders(args)
    except (OSError, ValueError) as err:
        print(f"nndet_eval: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
