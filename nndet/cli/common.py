"""Helpers shared by the commands: logging set-up, task lookup, error reporting."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable


def setup_logging(verbose: bool = False) -> None:
    """Log nndet's messages to stderr, one line each."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def default_processes() -> int:
    """Worker processes that fit the machine: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def run_command(body: Callable[[], int | None]) -> None:
    """Run a command body; turn expected errors into one clear message and exit code 1."""
    try:
        code = body()
    except (FileNotFoundError, ValueError, KeyError, NotImplementedError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
