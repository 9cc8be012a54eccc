"""Checkpoints: plain state dicts written atomically and read with ``weights_only=True``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from nndet import __version__
from nndet.data.io import atomic_write

logger = logging.getLogger(__name__)


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically.

    The nndet version is added so that a later release can tell what wrote the file.
    """
    state = {"nndet_version": __version__, **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without unpickling code.

    Raises:
        FileNotFoundError: naming the missing file and the command that writes it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path}: train this fold with `nndet_train` first")
    return torch.load(path, map_location=map_location, weights_only=True)
