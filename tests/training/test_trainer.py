import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nndet.preprocessing.prepare import prepare_task
from nndet.training import trainer
from nndet.training.checkpoint import load_checkpoint
from nndet.training.trainer import TrainConfig, train_fold

sys.path.insert(0, str(Path(__file__).parent))
from tiny_raw_task import write_tiny_task  # noqa: E402


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    task = write_tiny_task(tmp_path_factory.mktemp("data"))
    prepare_task(task, target="cpu", num_processes=1)
    return task


def _config(task: Path, models: Path, **changes) -> TrainConfig:
    config = TrainConfig(task_dir=task, model_dir=models / "retina_unet_2d", fold=0, epochs=2,
                         iters_per_epoch=2, num_workers=0, device="cpu")  # fmt: skip
    return replace(config, **changes)


def test_a_fold_trains_validates_and_leaves_every_file(tiny_task, tmp_path):
    out = train_fold(_config(tiny_task, tmp_path))
    for name in ("checkpoint_final.pt", "checkpoint_latest.pt", "log.txt", "metrics.jsonl",
                 "progress.png", "val_metrics.json"):  # fmt: skip
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(r["loss_total"] > 0 and r["lr"] > 0 for r in records)
    val = json.loads((out / "val_metrics.json").read_text())["mAP@0.1"]
    assert records[-1]["val_mAP@0.1"] == val and "val_mAP@0.1" not in records[0]
    assert "epoch 1:" in (out / "log.txt").read_text()
    assert sorted(p.name for p in (out / "val_predictions").glob("*_boxes.json"))
    assert sorted(p.name for p in (out / "val_views").iterdir())
    assert "mAP@0.1" in json.loads((out / "val_metrics.json").read_text())
    state = load_checkpoint(out / "checkpoint_final.pt")
    assert state["epochs_done"] == 2 and state["model_name"] == "retina_unet"
    assert (out.parent / "dataset.json").is_file() and (out.parent / "plan.json").is_file()


def test_a_killed_run_resumes_from_its_last_epoch(tiny_task, tmp_path, monkeypatch):
    config = _config(tiny_task, tmp_path, epochs=3, validate=False)
    calls = []
    real_end = trainer._end_epoch

    def end_then_die(run, record):
        real_end(run, record)
        calls.append(record["epoch"])
        if record["epoch"] == 1:
            raise KeyboardInterrupt  # the run is killed after epoch 1 was saved

    monkeypatch.setattr(trainer, "_end_epoch", end_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_fold(config)
    out = trainer.fold_dir(config)
    assert load_checkpoint(out / "checkpoint_latest.pt")["epochs_done"] == 2
    assert not (out / "checkpoint_final.pt").exists()

    calls.clear()
    monkeypatch.setattr(trainer, "_end_epoch", real_end)
    started = []
    real_run = trainer._run_epoch
    monkeypatch.setattr(
        trainer, "_run_epoch", lambda run, epoch: started.append(epoch) or real_run(run, epoch)
    )
    train_fold(config)
    assert started == [2]
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]
    assert load_checkpoint(out / "checkpoint_final.pt")["epochs_done"] == 3


def test_no_resume_starts_over(tiny_task, tmp_path):
    config = _config(tiny_task, tmp_path, epochs=1, validate=False)
    train_fold(config)
    first = load_checkpoint(trainer.fold_dir(config) / "checkpoint_final.pt")["model"]
    train_fold(replace(config, resume=False))
    second = load_checkpoint(trainer.fold_dir(config) / "checkpoint_final.pt")["model"]
    # Same seed, same data: starting over reproduces the run exactly on the CPU.
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_each_model_variant_trains(tiny_task, tmp_path):
    for model in ("retina_net", "detunet"):
        config = _config(tiny_task, tmp_path, model=model, epochs=1, iters_per_epoch=1,
                         model_dir=tmp_path / f"{model}_2d")  # fmt: skip
        out = train_fold(config)
        assert load_checkpoint(out / "checkpoint_final.pt")["model_name"] == model
        assert (out / "val_metrics.json").is_file()


def test_bad_requests_have_clear_errors(tiny_task, tmp_path):
    with pytest.raises(ValueError, match="fold 7"):
        train_fold(_config(tiny_task, tmp_path, fold=7))
    with pytest.raises(ValueError, match="unknown model"):
        train_fold(_config(tiny_task, tmp_path, model="yolo"))
