"""Five seeded folds over the training cases."""

from __future__ import annotations

import pytest

from nndet.planning.splits import load_splits, make_splits, save_splits

CASES = [f"case{i:03d}" for i in range(23)]


def test_folds_are_disjoint_and_cover_every_case_once():
    splits = make_splits(CASES)
    assert len(splits) == 5
    vals = [case for fold in splits for case in fold["val"]]
    assert sorted(vals) == CASES
    for fold in splits:
        assert set(fold["train"]).isdisjoint(fold["val"])
        assert sorted(fold["train"] + fold["val"]) == CASES


def test_same_seed_same_folds_other_seed_other_folds():
    assert make_splits(CASES, seed=1) == make_splits(list(reversed(CASES)), seed=1)
    assert make_splits(CASES, seed=1) != make_splits(CASES, seed=2)


def test_fewer_cases_than_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot make 5 folds"):
        make_splits(CASES[:4])
    assert len(make_splits(CASES[:4], num_folds=2)) == 2


def test_splits_round_trip(tmp_path):
    splits = make_splits(CASES)
    save_splits(splits, tmp_path / "splits.json")
    assert load_splits(tmp_path / "splits.json") == splits
