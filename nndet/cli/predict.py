"""``nndet_predict``: predict a folder of new images with a trained model's fold ensemble."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm import tqdm

from nndet.cli.common import run_command, setup_logging
from nndet.data.paths import data_root, task_dir
from nndet.inference.models import resolve_model_dir
from nndet.inference.predict_folder import PredictReport, predict_folder

TEST_DIR = "test_predictions"

DESCRIPTION = f"""\
Predict every case of a folder of images with the fold ensemble of a trained model:
each case is preprocessed as the training cases were, predicted with sliding windows
and test-time mirroring by every trained fold, and its boxes are consolidated with the
settings nndet_sweep chose (the defaults, with a warning, before a sweep). Writes
OUT/CASE_boxes.json per case (boxes in the input image's voxels, their physical
centres and the operating point score_threshold) and OUT/predictions.csv.

Input: files CASE_0000.ext, CASE_0001.ext ... one per modality (any format SimpleITK
reads); a single-modality model also takes any file names. A case already in OUT is
skipped (--overwrite predicts it again); a file that cannot be read is reported at the
end and the exit code is 1.

The model: TASK (with --plan/--model; where one trained <model>_<plan> exists it is
used) under $NNDET_MODELS, or --model-dir, a <model>_<plan> folder copied anywhere.
--test predicts the task's raw_splitted/imagesTs into <model_dir>/{TEST_DIR}/.
See documentation/prediction.md."""

EPILOG = """\
examples:
  nndet_predict Task101 -i new_images/ -o predictions/
  nndet_predict Task101 --test --png            # then: nndet_eval Task101 --test
  nndet_predict --model-dir /models/retina_unet_2d -i new_images/ -o predictions/ --nifti"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nndet_predict",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", nargs="?", help="the task: Task001, Task001_Name, 001 or 1")
    parser.add_argument("-i", "--input", metavar="IN", help="folder of images to predict")
    parser.add_argument("-o", "--output", metavar="OUT", help="folder to write predictions to")
    parser.add_argument(
        "--test", action="store_true",
        help=f"predict the task's imagesTs into <model_dir>/{TEST_DIR}",
    )  # fmt: skip
    parser.add_argument(
        "--model-dir", metavar="DIR", help="a <model>_<plan> folder, instead of TASK"
    )
    parser.add_argument("--plan", help="plan name (default: the only trained one, else default)")
    parser.add_argument(
        "--model", help="model name (default: the only trained one, else retina_unet)"
    )
    parser.add_argument(
        "--folds", type=int, nargs="+", metavar="K",
        help="folds of the ensemble (default: every fold with checkpoint_final.pt)",
    )  # fmt: skip
    parser.add_argument(
        "--no-mirror", dest="mirror", action="store_false", help="no test-time mirroring"
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument(
        "--png", action="store_true",
        help="draw the boxes at or above the operating point into OUT/png/",
    )  # fmt: skip
    parser.add_argument(
        "--nifti", action="store_true",
        help="write the boxes as an instance map on the input's grid into OUT/nifti/",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true", help="predict cases again that OUT already holds"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    return parser


def resolve_folders(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[Path, Path, Path]:
    """``(model_dir, in_dir, out_dir)`` from the arguments; usage errors exit via ``parser``."""
    if (args.task is None) == (args.model_dir is None):
        parser.error("name either TASK or --model-dir")
    if args.test:
        if args.task is None:
            parser.error("--test needs TASK (it reads the task's imagesTs from NNDET_DATA)")
        if args.input or args.output:
            parser.error("--test chooses its own folders: leave out -i and -o")
    elif not (args.input and args.output):
        parser.error("give -i IN and -o OUT (or --test)")
    if args.model_dir is not None and (args.plan or args.model):
        parser.error("--plan and --model choose among a task's models: not with --model-dir")

    if args.model_dir is not None:
        model_dir = Path(args.model_dir)
    else:
        model_dir = resolve_model_dir(args.task, args.model, args.plan)
    if not args.test:
        return model_dir, Path(args.input), Path(args.output)
    images = task_dir(args.task) / "raw_splitted" / "imagesTs"
    if not images.is_dir():
        raise FileNotFoundError(
            f"{args.task} has no test images ({images} does not exist under "
            f"NNDET_DATA={data_root()}): predict another folder with -i IN -o OUT"
        )
    return model_dir, images, model_dir / TEST_DIR


def _progress(items: Iterable, total: int) -> Iterable:
    return tqdm(items, total=total, desc="predicting", unit="case", file=sys.stderr)


def print_report(report: PredictReport) -> None:
    print(
        f"predicted {len(report.predicted)} cases, skipped {len(report.skipped)} already "
        f"written, {len(report.failed)} failed (folds {report.folds})"
    )
    if report.score_threshold is None:
        print("no operating point: run nndet_sweep to tune the settings and choose one")
    else:
        print(f"operating point: score >= {report.score_threshold:.4f}")
    if report.csv is not None:
        print(f"wrote {report.out_dir}/CASE_boxes.json and {report.csv}")
    if report.failed:
        print(f"{len(report.failed)} cases could not be predicted:", file=sys.stderr)
        for case_id, why in sorted(report.failed.items()):
            print(f"  {case_id}: {why}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        model_dir, in_dir, out_dir = resolve_folders(args, parser)
        print(f"nndet_predict: model {model_dir}")
        print(f"reading {in_dir}, writing {out_dir}")
        report = predict_folder(
            model_dir, in_dir, out_dir, folds=args.folds, mirror=args.mirror,
            device=args.device, png=args.png, nifti=args.nifti, overwrite=args.overwrite,
            progress=_progress,
        )  # fmt: skip
        print_report(report)
        return 1 if report.failed else 0

    run_command(body)


if __name__ == "__main__":
    main()
