"""``nndet_train``: train one fold (or all five) of a task's plan."""

from __future__ import annotations

import argparse
from dataclasses import replace

from tqdm.contrib.logging import logging_redirect_tqdm

from nndet.cli.common import run_command, setup_logging
from nndet.data.paths import models_root, task_dir
from nndet.planning.plan import load_plans
from nndet.training.trainer import MODELS, TrainConfig, train_fold


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nndet_train",
        description=(
            "Train a detector on one fold of a prepared task, then predict and score the"
            " fold's validation cases. Reads $NNDET_DATA/TaskNNN_*/preprocessed/ and writes"
            " $NNDET_MODELS/TaskNNN_*/<model>_<plan>/fold<K>/. A killed run resumes from its"
            " last epoch when started again."
        ),
    )
    parser.add_argument("task", help="the task: Task001, Task001_Name, 001 or 1")
    parser.add_argument(
        "-f", "--fold", default="0", help="fold 0-4, or 'all' for the five folds one by one"
    )
    parser.add_argument("--plan", help="plan name (default: the task's default plan)")
    parser.add_argument("--model", default="retina_unet", choices=MODELS, help="model variant")
    parser.add_argument("--epochs", type=int, help="epochs (default: the plan's)")
    parser.add_argument("--iters-per-epoch", type=int, help="iterations per epoch (plan's)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        help="default: SGD (nnU-Net) for GPU plans, AdamW for --target cpu plans",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--num-workers", type=int, default=2, help="background data workers (default 2)"
    )
    parser.add_argument(
        "--no-resume", dest="resume", action="store_false", help="start over, ignore checkpoints"
    )
    parser.add_argument("--resume", dest="resume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-validate", dest="validate", action="store_false", help="skip validation at the end"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        folder = task_dir(args.task)
        plans = load_plans(folder / "preprocessed" / "plans.json")
        plan = plans.get(args.plan)
        model_dir = models_root() / folder.name / f"{args.model}_{plan.name}"
        folds = range(5) if args.fold == "all" else [int(args.fold)]
        base = TrainConfig(
            task_dir=folder, model_dir=model_dir, fold=0, plan_name=plan.name,
            model=args.model, epochs=args.epochs, iters_per_epoch=args.iters_per_epoch,
            device=args.device, seed=args.seed, optimizer=args.optimizer,
            num_workers=args.num_workers, resume=args.resume, validate=args.validate,
        )  # fmt: skip
        print(f"nndet_train: reading {folder / 'preprocessed'}, writing {model_dir}")
        for fold in folds:
            with logging_redirect_tqdm():  # log lines above the progress bar, not through it
                out = train_fold(replace(base, fold=fold))
            _report(out)
        return 0

    run_command(body)


def _report(out) -> None:
    metrics = out / "val_metrics.json"
    print(f"fold folder: {out}")
    if metrics.is_file():
        from nndet.data.io import load_json
        from nndet.evaluation.report import format_table

        print(format_table(load_json(metrics)))


if __name__ == "__main__":
    main()
