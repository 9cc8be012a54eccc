import json

import pytest
import torch

from nndet.training.checkpoint import load_checkpoint, save_checkpoint
from nndet.training.progress import (
    append_metrics,
    format_epoch,
    plot_progress,
    read_metrics,
    truncate_metrics,
)


def test_checkpoint_loads_with_weights_only_and_keeps_values(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint_latest.pt"
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epochs_done": 3,
            "config": {"fold": 0, "task_dir": "x"},
        },
    )
    state = load_checkpoint(path)
    assert state["epochs_done"] == 3
    assert "nndet_version" in state
    assert torch.equal(state["model"]["weight"], model.state_dict()["weight"])
    assert not list(tmp_path.glob(".*tmp*"))


def test_missing_checkpoint_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="nndet_train"):
        load_checkpoint(tmp_path / "checkpoint_final.pt")


def test_metrics_jsonl_skips_a_damaged_last_line_and_truncates_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for epoch in range(3):
        append_metrics(
            path, {"epoch": epoch, "loss_total": 1.0 / (epoch + 1), "lr": 0.01, "time": 1.0}
        )
    with open(path, "a") as handle:
        handle.write('{"epoch": 3, "loss_')  # a run killed while writing
    assert [r["epoch"] for r in read_metrics(path)] == [0, 1, 2]
    truncate_metrics(path, 2)
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [0, 1]


def test_epoch_line_and_progress_picture(tmp_path):
    records = [
        {
            "epoch": e,
            "loss_total": 2.0 - e * 0.1,
            "loss_cls": 1.0 - e * 0.05,
            "lr": 0.01,
            "time": 2.5,
            "val_mAP@0.1": 0.5 if e == 4 else None,
        }
        for e in range(5)
    ]
    line = format_epoch(records[4])
    assert "epoch 4" in line and "total 1.6000" in line and "val mAP@0.1 0.500" in line
    plot_progress(records, tmp_path / "progress.png")
    assert (tmp_path / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
