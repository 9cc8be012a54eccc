"""``nndet_example``: write the example tasks Task101-Task104 into the data root."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from nndet.data.example import EXAMPLE_TASKS, example_counts, example_task, write_example_task
from nndet.data.paths import data_root


def build_parser() -> argparse.ArgumentParser:
    tasks = "\n".join(f"  {t.folder:22s} {t.description}" for t in EXAMPLE_TASKS.values())
    parser = argparse.ArgumentParser(
        prog="nndet_example",
        description="Write synthetic example tasks with labelled training and test splits"
        " in the raw layout (documentation/data_format.md).",
        epilog=f"tasks:\n{tasks}\n\nexample: nndet_example 101 --num-train 50 -o /tmp/data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "tasks", nargs="*", metavar="TASK", help="tasks to write (101, Task101 ...); default: all"
    )
    parser.add_argument(
        "--num-train", type=int, help="training cases (default: 200 for 2D, 24 for Task104)"
    )
    parser.add_argument("--num-test", type=int, help="test cases (default: 100 for 2D, 8 for 3D)")
    parser.add_argument(
        "--noise",
        type=float,
        default=0.5,
        help="2D: uniform noise from [0, NOISE) on objects raised by 0.2; Task104: Gaussian"
        " noise of 60*NOISE HU (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--full",
        action="store_true",
        help="larger sets: 1000+200 2D images; 100+25 3D volumes of ~64x192x192",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing task folders (their preprocessed data goes with them)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="data root (default: NNDET_DATA, else ./nndet_data)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    root = args.output if args.output is not None else data_root()
    try:
        specs = [example_task(t) for t in args.tasks] or list(EXAMPLE_TASKS.values())
        counts = [example_counts(s, args.num_train, args.num_test, args.full) for s in specs]
    except ValueError as err:
        parser.error(str(err))
    if args.noise < 0 or args.seed < 0:
        parser.error("--noise and --seed must not be negative")

    print(f"writing example tasks to {root.resolve()}")
    failed = 0
    for spec, (num_train, num_test) in zip(specs, counts, strict=True):
        if (root / spec.folder).exists() and not args.overwrite:
            print(f"{spec.folder}: exists, skipped (pass --overwrite to replace it)")
            continue
        with tqdm(total=num_train + num_test, desc=spec.folder, unit="case") as bar:
            try:
                path = write_example_task(
                    spec.number, root, num_train, num_test, noise=args.noise, seed=args.seed,
                    full=args.full, overwrite=args.overwrite, progress=lambda _: bar.update(),
                )  # fmt: skip
            except (FileExistsError, OSError) as err:
                bar.close()
                print(f"{spec.folder}: {err}", file=sys.stderr)
                failed += 1
                continue
        print(f"{spec.folder}: {num_train} training and {num_test} test cases in {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
