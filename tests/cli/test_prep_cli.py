"""nndet_prep end to end on raw data written here, not by nndet_example."""

import json
import sys
from pathlib import Path

import pytest

from nndet.cli.prep import main
from nndet.planning.plan import load_plans
from nndet.preprocessing.storage import CaseStore

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from tiny_raw_task import write_tiny_task  # noqa: E402


def _run(argv) -> int:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("NNDET_DATA", str(tmp_path))
    return tmp_path


def test_prep_writes_fingerprint_plans_splits_and_cases(data_root, capsys):
    task = write_tiny_task(data_root, num_cases=10)
    assert _run(["900", "--target", "cpu", "-np", "1"]) == 0
    out = task / "preprocessed"
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint  # written and readable
    plans = load_plans(out / "plans.json")
    assert plans.default == "2d" and plans.get().dim == 2 and plans.get().target == "cpu"
    assert plans.get().anchor_iou >= 0.7
    splits = json.loads((out / "splits.json").read_text())
    assert len(splits) == 5
    assert sorted(c for f in splits for c in f["val"]) == [f"case{i:03d}" for i in range(10)]
    assert CaseStore(out / "2d").case_ids() == [f"case{i:03d}" for i in range(10)]
    printed = capsys.readouterr().out
    assert "plan 2d (default)" in printed and str(out) in printed


def test_a_rerun_skips_finished_cases(data_root):
    task = write_tiny_task(data_root, num_cases=6)
    assert _run(["900", "--target", "cpu", "-np", "1"]) == 0
    case = task / "preprocessed" / "2d" / "case000.b2nd"
    before = case.stat().st_mtime_ns
    assert _run(["Task900", "--target", "cpu", "-np", "1"]) == 0
    assert case.stat().st_mtime_ns == before
    assert _run(["Task900_Tiny", "--target", "cpu", "-np", "1", "--overwrite"]) == 0
    assert case.stat().st_mtime_ns != before


def test_bad_raw_data_lists_every_problem_and_writes_nothing(data_root, capsys):
    task = write_tiny_task(data_root, num_cases=4)
    labels = task / "raw_splitted" / "labelsTr"
    (labels / "case001.json").write_text(json.dumps({"instances": {"1": 0, "5": 1}}))
    (labels / "case002.json").unlink()
    (task / "raw_splitted" / "imagesTr" / "case003_0000.nii.gz").write_bytes(b"not an image")
    assert _run(["900"]) == 1
    err = capsys.readouterr().err
    assert "case001.json" in err and "case002" in err and "case003_0000.nii.gz" in err
    assert "nothing was written" in err
    assert not (task / "preprocessed").exists()


def test_check_only_writes_nothing(data_root, capsys):
    task = write_tiny_task(data_root, num_cases=4)
    assert _run(["900", "--check-only"]) == 0
    assert "passed every check" in capsys.readouterr().out
    assert not (task / "preprocessed").exists()


def test_unknown_task_names_the_data_root(data_root, capsys):
    assert _run(["123"]) == 1
    err = capsys.readouterr().err
    assert "Task123" in err and "NNDET_DATA" in err
