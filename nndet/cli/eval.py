"""``nndet_eval``: detection metrics of a prediction folder against a labels folder.

Three forms: ``--pred DIR --gt DIR`` for any folders; ``TASK --fold K`` for a trained
fold's validation predictions; ``TASK --test`` for ``nndet_predict TASK --test``'s output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm import tqdm

from nndet.data.io import load_json
from nndet.data.paths import task_dir
from nndet.evaluation.folders import evaluate_folders, list_prediction_cases
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
class ids are used. See documentation/evaluation.md for the metrics and matching.

Task forms (folders found from $NNDET_MODELS and $NNDET_DATA):
  TASK --fold K  <model>_<plan>/fold<K>/val_predictions against raw_splitted/labelsTr,
                 only the fold's validation cases (from preprocessed/splits.json)
  TASK --test    <model>_<plan>/test_predictions (nndet_predict TASK --test) against
                 raw_splitted/labelsTs
Both write metrics.json into the prediction folder."""

EPILOG = """\
examples:
  nndet_eval Task101 --fold 0
  nndet_eval Task101 --test --plan 2d
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
    parser.add_argument(
        "task", nargs="?", help="the task (with --fold or --test): Task001, 001 or 1"
    )
    parser.add_argument("--fold", type=int, metavar="K", help="a trained fold's validation")
    parser.add_argument("--test", action="store_true", help="the task's test predictions")
    parser.add_argument("--plan", help="plan name (default: the only trained one, else default)")
    parser.add_argument(
        "--model", help="model name (default: the only trained one, else retina_unet)"
    )
    parser.add_argument("--pred", metavar="DIR", help="prediction folder")
    parser.add_argument("--gt", metavar="DIR", help="labels folder (raw layout)")
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


def check_form(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Exit with a usage error unless the arguments make exactly one of the three forms."""
    if args.task is None:
        if not (args.pred and args.gt):
            parser.error("give --pred DIR --gt DIR, or TASK with --fold K or --test")
        if args.fold is not None or args.test or args.plan or args.model:
            parser.error("--fold, --test, --plan and --model need TASK")
        return
    if args.pred or args.gt:
        parser.error("TASK finds its own folders: leave out --pred and --gt")
    if (args.fold is None) == (not args.test):
        parser.error("with TASK give either --fold K or --test")


def fold_validation_cases(task: str, fold: int, pred_dir: Path) -> list[str]:
    """The validation cases of ``fold`` from the task's ``splits.json``.

    Without a ``splits.json`` (a model folder used away from its data) the cases that
    ``pred_dir`` holds are taken.
    """
    splits_path = task_dir(task) / "preprocessed" / "splits.json"
    if not splits_path.is_file():
        print(f"no {splits_path}: evaluating the cases in {pred_dir}")
        return sorted(list_prediction_cases(pred_dir))
    splits = load_json(splits_path)
    if not 0 <= fold < len(splits):
        raise ValueError(f"fold {fold} does not exist: {splits_path} has {len(splits)} folds")
    return list(splits[fold]["val"])


def task_folders(args: argparse.Namespace) -> tuple[Path, Path, list[str] | None]:
    """``(prediction folder, labels folder, cases to evaluate or None for all)`` of TASK."""
    from nndet.inference.models import resolve_model_dir  # the task forms only: loads torch

    model_dir = resolve_model_dir(args.task, args.model, args.plan)
    raw = task_dir(args.task) / "raw_splitted"
    if args.test:
        pred_dir = model_dir / "test_predictions"
        if not pred_dir.is_dir():
            raise FileNotFoundError(
                f"no test predictions in {pred_dir}: run `nndet_predict {args.task} --test` first"
            )
        return pred_dir, raw / "labelsTs", None
    pred_dir = model_dir / f"fold{args.fold}" / "val_predictions"
    if not pred_dir.is_dir():
        raise FileNotFoundError(
            f"no validation predictions in {pred_dir}: run `nndet_train {args.task} "
            f"-f {args.fold}` (it predicts the validation cases at the end)"
        )
    return pred_dir, raw / "labelsTr", fold_validation_cases(args.task, args.fold, pred_dir)


def run_folders(args: argparse.Namespace) -> None:
    """Evaluate the folders the arguments name, print the table and where the JSON went."""
    pred, gt, case_ids = (args.pred, args.gt, None) if args.task is None else task_folders(args)
    print(f"predictions:  {pred}")
    print(f"ground truth: {gt}" + (f" ({len(case_ids)} cases)" if case_ids is not None else ""))
    metrics, output = evaluate_folders(
        pred,
        gt,
        output=args.output,
        dataset_json=args.dataset_json,
        iou_thresholds_extra=args.iou,
        missing_as_empty=args.missing_as_empty,
        progress=_progress,
        case_ids=case_ids,
    )
    print(format_table(metrics))
    print(f"wrote {output}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_form(args, parser)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_folders(args)
    except (OSError, ValueError, KeyError) as err:
        print(f"nndet_eval: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
