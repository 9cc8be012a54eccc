"""CaseStore: nnU-Net's blosc2 arrays with JSON properties, written atomically."""

from __future__ import annotations

import numpy as np
import pytest

from nndet.preprocessing.storage import CaseStore


def _arrays(shape, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(2, *shape)).astype(np.float32)
    seg = rng.integers(-1, 4, size=(1, *shape)).astype(np.int16)
    return data, seg


@pytest.mark.parametrize("shape,patch", [((9, 20, 24), [8, 16, 16]), ((30, 26), [16, 16])])
def test_saved_case_loads_back_equal_and_lazily(tmp_path, shape, patch):
    store = CaseStore(tmp_path / "plan")
    data, seg = _arrays(shape)
    store.save_case("c1", data, seg, {"case_id": "c1", "boxes": [[1, 2, 3, 4]]}, patch)
    loaded, loaded_seg, props = store.load_case("c1")
    assert not isinstance(loaded, np.ndarray)  # a blosc2 array, read on slicing
    np.testing.assert_array_equal(loaded[:], data)
    np.testing.assert_array_equal(loaded_seg[:], seg)
    assert props == {"case_id": "c1", "boxes": [[1, 2, 3, 4]]}
    assert store.load_properties("c1") == props
    assert sorted(p.name for p in store.folder.iterdir()) == ["c1.b2nd", "c1.json", "c1_seg.b2nd"]


def test_only_cases_with_their_json_and_both_arrays_are_listed(tmp_path):
    store = CaseStore(tmp_path)
    data, seg = _arrays((4, 8, 8))
    for case_id in ("b", "a"):
        store.save_case(case_id, data, seg, {"case_id": case_id}, [4, 8, 8])
    (tmp_path / "a.json").unlink()
    (tmp_path / ".tmp-x-c.b2nd").write_bytes(b"")
    (tmp_path / "storage.json").write_text("{}")  # other files in the folder are no cases
    assert store.case_ids() == ["b"] and CaseStore(tmp_path).identifiers == ["b"]
    assert store.clean_tmp() == [".tmp-x-c.b2nd"]


def test_saving_again_replaces_the_case(tmp_path):
    store = CaseStore(tmp_path)
    data, seg = _arrays((4, 8, 8))
    store.save_case("a", data, seg, {"v": 1}, [4, 8, 8])
    store.save_case("a", data * 2, seg, {"v": 2}, [4, 8, 8])
    new_data, _, props = store.load_case("a")
    np.testing.assert_array_equal(new_data[:], data * 2)
    assert props == {"v": 2}


def test_ids_beyond_int16_and_missing_cases_give_clear_errors(tmp_path):
    store = CaseStore(tmp_path)
    data, seg = _arrays((4, 8, 8))
    with pytest.raises(ValueError, match="case big.*32767"):
        store.save_case("big", data, seg.astype(np.int32) * 20000, {}, [4, 8, 8])
    with pytest.raises(FileNotFoundError, match="nope.*nndet_prep"):
        store.load_case("nope")
