"""Whole raw tasks written in the test, preprocessed into a CaseStore."""

from __future__ import annotations

import os

import blosc2
import numpy as np
import pytest
from prep_helpers import balls_case, make_plan, write_case, write_dataset_json

from nndet.data.instances import instance_boxes
from nndet.planning.plan import Normalization
from nndet.preprocessing.geometry import boxes_to_stored
from nndet.preprocessing.preprocess import preprocess_dataset
from nndet.preprocessing.storage import CaseStore

PROPERTY_KEYS = {
    "case_id", "instances", "ids", "classes", "boxes", "original_geometry", "crop_bbox",
    "shape_after_crop", "shape_after_resample", "original_spacing", "target_spacing",
    "transpose", "lost_instances", "split_instances", "object_locations",
}  # fmt: skip


def _task_3d(root):
    task = root / "Task900_Balls3D"
    write_dataset_json(task, dim=3)
    spacings = [[3.0, 0.8, 0.8], [2.5, 0.7, 0.75], [3.0, 0.8, 0.8]]
    centres = [[(6, 12, 12), (7, 26, 25)], [(5, 15, 20)], []]
    raw = {}
    for k, (spacing, cs) in enumerate(zip(spacings, centres, strict=True)):
        image, imap = balls_case((13, 36, 34), cs, [3.5] * len(cs), border=2, seed=k)
        classes = {i: (i + k) % 2 for i in range(1, len(cs) + 1)}
        write_case(task, f"case{k}", image, imap, classes, spacing)
        raw[f"case{k}"] = (imap, classes)
    return task, raw


def _task_2d(root):
    task = root / "Task901_Discs2D"
    write_dataset_json(task, dim=2, modality="MRI")
    raw = {}
    for k in range(2):
        image, imap = balls_case((48, 52), [(15, 15), (30, 34)], [5, 7], border=3, seed=10 + k)
        write_case(task, f"img{k}", image, imap, {1: 0, 2: 1}, [0.5, 0.5])
        raw[f"img{k}"] = (imap, {1: 0, 2: 1})
    return task, raw


def _check_store(store, raw):
    assert store.case_ids() == sorted(raw)
    for case_id, (imap, classes) in raw.items():
        data, seg, props = store.load_case(case_id)
        assert isinstance(data, blosc2.NDArray) and isinstance(seg, blosc2.NDArray)
        assert data.dtype == np.float32 and seg.dtype == np.int16
        assert PROPERTY_KEYS <= set(props)
        assert list(data.shape[1:]) == props["shape_after_resample"] == list(seg.shape[1:])
        assert props["instances"] == {str(k): v for k, v in classes.items()}
        stored_map = seg[:][0]
        assert props["boxes"] == [instance_boxes(stored_map)[i] for i in props["ids"]]
        raw_boxes = instance_boxes(imap)
        if props["ids"]:
            mapped = boxes_to_stored(np.array([raw_boxes[i] for i in props["ids"]]), props)
            scale = np.array(props["shape_after_resample"]) / props["shape_after_crop"]
            tol = np.concatenate([np.maximum(scale, 1) / 2] * 2) + 1e-6
            assert np.all(np.abs(mapped.numpy() - np.array(props["boxes"])) <= tol)


def test_a_3d_task_prepares_into_readable_cases_with_boxes(tmp_path):
    task, raw = _task_3d(tmp_path)
    ct = Normalization("ct", mean=150.0, std=80.0, lower=0.0, upper=400.0)
    plan = make_plan([2.0, 0.6, 0.6], normalization=[ct], name="3d")
    report = preprocess_dataset(task, plan, num_processes=2, progress=False)
    store = CaseStore(task / "preprocessed" / "3d")
    assert report["preprocessed"] == sorted(raw) and report["skipped"] == []
    _check_store(store, raw)
    assert not list(store.folder.glob("*.pkl"))
    _, _, empty = store.load_case("case2")
    assert empty["boxes"] == [] and empty["ids"] == [] and empty["object_locations"] == {}


def test_a_2d_task_prepares_into_readable_2d_cases(tmp_path):
    task, raw = _task_2d(tmp_path)
    plan = make_plan([0.4, 0.6], transpose=[1, 0], name="2d")
    preprocess_dataset(task, plan, tmp_path / "out", num_processes=1, progress=False)
    store = CaseStore(tmp_path / "out")
    _check_store(store, raw)
    data, seg, _ = store.load_case("img0")
    assert data.ndim == 3 and seg.ndim == 3


def test_lost_and_split_objects_are_collected_per_case(tmp_path):
    task = tmp_path / "Task902_Tiny"
    write_dataset_json(task, dim=3)
    image, imap = balls_case((7, 30, 30), [(3, 10, 10)], [3], border=0, seed=0)
    imap[3, 24, 24] = 2  # one voxel between the samples (odd indices) of a 2x downsampling
    write_case(task, "tiny", image, imap, {1: 0, 2: 1}, [1.0, 1.0, 1.0])
    report = preprocess_dataset(task, make_plan([1.0, 2.0, 2.0]), num_processes=1, progress=False)
    assert report["lost"] == {"tiny": [2]} and report["split"] == {}
    again = preprocess_dataset(task, make_plan([1.0, 2.0, 2.0]), num_processes=1, progress=False)
    assert again["skipped"] == ["tiny"] and again["lost"] == {"tiny": [2]}


def test_a_second_run_skips_finished_cases_and_removes_leftovers(tmp_path):
    task, raw = _task_3d(tmp_path)
    plan = make_plan([3.0, 1.0, 1.0], name="3d")
    preprocess_dataset(task, plan, num_processes=1, progress=False)
    folder = task / "preprocessed" / "3d"
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    # an interrupted write: arrays under temporary names, and a case without its json
    (folder / ".tmp-0123-case1.b2nd").write_bytes(b"partial")
    (folder / ".case1.json.xyz.tmp.json").write_text("{")
    (folder / "case1.json").unlink()
    assert CaseStore(folder).case_ids() == ["case0", "case2"]

    report = preprocess_dataset(task, plan, num_processes=1, progress=False)
    assert report["preprocessed"] == ["case1"] and report["skipped"] == ["case0", "case2"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    for name in ("case0.b2nd", "case0_seg.b2nd", "case0.json", "case2.json"):
        assert (folder / name).stat().st_mtime_ns == mtimes[name]
    _check_store(CaseStore(folder), raw)


def test_overwrite_rewrites_every_case(tmp_path):
    task, _ = _task_2d(tmp_path)
    plan = make_plan([0.5, 0.5], name="2d")
    preprocess_dataset(task, plan, num_processes=1, progress=False)
    folder = task / "preprocessed" / "2d"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    os.utime(folder / "img0.json", ns=(0, 0))  # make a rewrite visible on coarse clocks
    report = preprocess_dataset(task, plan, num_processes=1, overwrite=True, progress=False)
    assert report["preprocessed"] == ["img0", "img1"] and report["skipped"] == []
    assert (folder / "img0.json").stat().st_mtime_ns > 0
    assert set(before) == {p.name for p in folder.iterdir()}


def test_an_empty_split_names_the_folder(tmp_path):
    task = tmp_path / "Task903_Empty"
    write_dataset_json(task, dim=3)
    with pytest.raises(FileNotFoundError, match="imagesTr"):
        preprocess_dataset(task, make_plan([1.0, 1.0, 1.0]), progress=False)


def test_default_process_count_respects_memory_and_cpus(tmp_path, monkeypatch):
    from nndet.data.dataset import list_cases
    from nndet.preprocessing import preprocess

    task, _ = _task_2d(tmp_path)
    cases = list_cases(task, "Tr")
    monkeypatch.setattr(preprocess, "_available_memory", lambda: 0)
    assert preprocess.default_num_processes(cases) == 1
    monkeypatch.setattr(preprocess, "_available_memory", lambda: 1 << 50)
    cpus = len(os.sched_getaffinity(0))
    assert preprocess.default_num_processes(cases) == min(cpus, 8)
