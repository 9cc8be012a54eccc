"""Cross-validation folds, written once to ``preprocessed/splits.json`` and reused by every step.

The file is a JSON list with one ``{"train": [case ids], "val": [case ids]}`` per fold, as
nnU-Net's ``splits_final.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nnunetv2.utilities.crossval_split import generate_crossval_split

from nndet.data.io import load_json, save_json

logger = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"
NUM_FOLDS = 5
SEED = 12345  # nnU-Net's seed for its splits


def make_splits(
    case_ids: list[str], num_folds: int = NUM_FOLDS, seed: int = SEED
) -> list[dict[str, list[str]]]:
    """Seeded K-fold split of the training cases (nnU-Net's shuffled KFold).

    Every case is in exactly one validation set; the same ids and seed give the same folds.

    Raises:
        ValueError: fewer cases than folds (each fold needs a validation case) or fewer than
            two folds.
    """
    case_ids = sorted(case_ids)
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids are not unique")
    if num_folds < 2:
        raise ValueError(f"need at least 2 folds, got {num_folds}")
    if len(case_ids) < num_folds:
        raise ValueError(
            f"{len(case_ids)} training cases cannot make {num_folds} folds: add cases to"
            f" imagesTr/labelsTr (at least {num_folds}) or ask for fewer folds"
        )
    folds = generate_crossval_split(case_ids, seed=seed, n_splits=num_folds)
    return [
        {"train": [str(c) for c in f["train"]], "val": [str(c) for c in f["val"]]} for f in folds
    ]


def save_splits(splits: list[dict[str, list[str]]], path: Path | str) -> None:
    """Write ``splits.json`` atomically."""
    save_json(splits, path)


def load_splits(path: Path | str) -> list[dict[str, list[str]]]:
    """Read ``splits.json``; a missing file names the command that writes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no splits at {path}: run `nndet_prep <task>` first")
    return load_json(path)
