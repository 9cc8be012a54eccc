"""What the user sees of training: the epoch log line, ``metrics.jsonl`` and ``progress.png``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from nndet.data.io import atomic_write

logger = logging.getLogger(__name__)


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (one epoch) to ``metrics.jsonl``."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl``; a truncated last line (killed run) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("skipping a damaged line in %s", path)
    return records


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``metrics.jsonl`` with ``records`` atomically."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def truncate_metrics(path: Path, epochs: int) -> None:
    """Keep only the records of the first ``epochs`` epochs (resuming from a checkpoint)."""
    write_metrics(path, [r for r in read_metrics(path) if r.get("epoch", 0) < epochs])


def format_epoch(record: dict[str, Any]) -> str:
    """The one log line per epoch: losses, learning rate, time."""
    losses = " ".join(
        f"{k.removeprefix('loss_')} {v:.4f}" for k, v in record.items() if k.startswith("loss_")
    )
    line = f"epoch {record['epoch']}: {losses} | lr {record['lr']:.2e} | {record['time']:.1f}s"
    if record.get("val_mAP@0.1") is not None:
        line += f" | val mAP@0.1 {record['val_mAP@0.1']:.3f}"
    return line


def plot_progress(records: list[dict[str, Any]], path: Path) -> None:
    """Plot losses, validation mAP (when computed) and learning rate over epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for key in sorted({k for r in records for k in r if k.startswith("loss_")}):
        ax_loss.plot(epochs, [r.get(key) for r in records], label=key.removeprefix("loss_"))
    # Linear scale: the segmentation loss (cross-entropy minus soft Dice) goes below zero.
    ax_loss.set_ylabel("training loss")
    ax_loss.axhline(0, color="grey", linewidth=0.5)
    val = [(r["epoch"], r["val_mAP@0.1"]) for r in records if r.get("val_mAP@0.1") is not None]
    if val:
        ax_map = ax_loss.twinx()
        ax_map.plot(*zip(*val, strict=True), "k-o", label="val mAP@0.1")
        ax_map.set_ylim(0, 1)
        ax_map.set_ylabel("validation mAP@0.1")
        ax_map.legend(loc="upper center")
    ax_loss.legend(loc="upper right")
    ax_lr.plot(epochs, [r["lr"] for r in records])
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
