"""nndet_train as a command: one fold with validation, all folds, and its errors."""

import sys
from pathlib import Path

import pytest

from nndet.cli.train import main
from nndet.preprocessing.prepare import prepare_task

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from tiny_raw_task import write_tiny_task  # noqa: E402

FAST = ["--epochs", "1", "--iters-per-epoch", "1", "--num-workers", "0", "--device", "cpu"]


def _run(argv) -> int:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("NNDET_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("NNDET_MODELS", str(tmp_path / "models"))
    return tmp_path


def test_one_fold_trains_and_prints_the_validation_table(roots, capsys):
    task = write_tiny_task(roots / "data", num_cases=6)
    prepare_task(task, target="cpu", num_processes=1)
    assert _run(["900", "-f", "0", *FAST]) == 0
    fold = roots / "models" / "Task900_Tiny" / "retina_unet_2d" / "fold0"
    assert (fold / "checkpoint_final.pt").is_file() and (fold / "val_metrics.json").is_file()
    out = capsys.readouterr().out
    assert str(fold) in out and "mAP@0.1" in out


def test_all_folds_train_one_after_another(roots):
    task = write_tiny_task(roots / "data", num_cases=6)
    prepare_task(task, target="cpu", num_processes=1)
    assert _run(["900", "-f", "all", "--model", "retina_net", "--no-validate", *FAST]) == 0
    model_dir = roots / "models" / "Task900_Tiny" / "retina_net_2d"
    assert sorted(p.parent.name for p in model_dir.glob("fold*/checkpoint_final.pt")) == [
        f"fold{k}" for k in range(5)
    ]


def test_training_an_unprepared_task_names_nndet_prep(roots, capsys):
    write_tiny_task(roots / "data", num_cases=6)
    assert _run(["900", *FAST]) == 1
    assert "nndet_prep" in capsys.readouterr().err
