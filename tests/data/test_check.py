"""The raw data check lists every problem with its file, and finds none in a clean task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nndet.data.check import Problem, check_raw_dataset, format_problems
from nndet.data.io import write_image

SHAPE = (4, 8, 8)
GEOMETRY = {
    "spacing": [2.5, 0.75, 0.75],
    "origin": [-3.0, -3.0, -100.0],
    "direction": np.eye(3).ravel().tolist(),
}
DATASET = {
    "task": "Task900_Check",
    "name": "Check",
    "dim": 3,
    "modalities": {"0": "CT", "1": "PET"},
    "labels": {"0": "a", "1": "b"},
    "test_labels": True,
}


def write_case(task: Path, case_id: str, split: str = "Tr", geometry: dict = GEOMETRY) -> None:
    """Two modalities, an instance map with ids 1 and 2, and their case json."""
    images, labels = (
        task / "raw_splitted" / f"images{split}",
        task / "raw_splitted" / f"labels{split}",
    )
    for mod in range(2):
        array = np.full(SHAPE, -500.0 + mod, dtype=np.float32)
        write_image(array, images / f"{case_id}_{mod:04d}.nii.gz", geometry)
    instance_map = np.zeros(SHAPE, dtype=np.uint8)
    instance_map[1:3, 1:3, 1:3] = 1
    instance_map[1:2, 5:7, 5:7] = 2
    write_image(instance_map, labels / f"{case_id}.nii.gz", geometry)
    (labels / f"{case_id}.json").write_text(json.dumps({"instances": {"1": 0, "2": 1}}))


@pytest.fixture
def task(tmp_path: Path) -> Path:
    """A clean 3D task: two training cases and one test case with labels."""
    task = tmp_path / "Task900_Check"
    task.mkdir()
    (task / "dataset.json").write_text(json.dumps(DATASET))
    write_case(task, "case0")
    write_case(task, "case1")
    write_case(task, "test0", split="Ts")
    return task


def image(task: Path, case_id: str = "case0", mod: int = 0, split: str = "Tr") -> Path:
    return task / "raw_splitted" / f"images{split}" / f"{case_id}_{mod:04d}.nii.gz"


def label(task: Path, case_id: str = "case0", ending: str = ".nii.gz", split: str = "Tr") -> Path:
    return task / "raw_splitted" / f"labels{split}" / f"{case_id}{ending}"


def edit_dataset(task_dir: Path, fields: dict) -> Path:
    """Rewrite dataset.json with ``fields`` changed; a field set to ``...`` is removed."""
    meta = {**DATASET, **fields}
    meta = {k: v for k, v in meta.items() if v is not ...}
    path = task_dir / "dataset.json"
    path.write_text(json.dumps(meta))
    return path


def only_problem(task: Path) -> Problem:
    problems = check_raw_dataset(task)
    assert len(problems) == 1, format_problems(problems)
    return problems[0]


def test_clean_task_has_no_problems(task):
    assert check_raw_dataset(task) == []
    assert "no problems" in format_problems([])


def test_example_task_passes_the_check(tmp_path):
    from nndet.data.example import write_example_task

    path = write_example_task(104, tmp_path, num_train=2, num_test=1)
    assert check_raw_dataset(path) == []


# --- dataset.json -----------------------------------------------------------------------------


def test_missing_dataset_json(task):
    (task / "dataset.json").unlink()
    problem = only_problem(task)
    assert problem.path == task / "dataset.json"
    assert "missing" in problem.message and "dim" in problem.message


def test_dataset_json_with_bad_syntax(task):
    (task / "dataset.json").write_text('{"dim": 3,')
    problem = only_problem(task)
    assert problem.path == task / "dataset.json" and "not valid JSON" in problem.message


@pytest.mark.parametrize("field", ["task", "name", "dim", "modalities", "labels"])
def test_missing_required_field(task, field):
    path = edit_dataset(task, {field: ...})
    problems = check_raw_dataset(task)
    assert problems[0].path == path and repr(field) in problems[0].message
    # without what the field promises, no case-level check may invent problems
    assert len(problems) == 1, format_problems(problems)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"dim": 4}, "'dim' is 4"),
        ({"dim": "3"}, "'dim' is '3'"),
        ({"labels": {"1": "a", "2": "b"}}, "'labels' must map the ids 0, 1"),
        ({"labels": {}}, "'labels' must map"),
        ({"labels": {"0": 1}}, "to names"),
        ({"modalities": ["CT"]}, "'modalities' must map"),
        ({"test_labels": "yes"}, "'test_labels' is 'yes'"),
        ({"target_class": 5}, "'target_class' 5"),
        ({"name": 3}, "'name' must be a string"),
    ],
)
def test_invalid_dataset_json_field(task, fields, words):
    path = edit_dataset(task, fields)
    problems = [p for p in check_raw_dataset(task) if p.path == path]
    assert len(problems) == 1 and words in problems[0].message, format_problems(problems)


# --- files --------------------------------------------------------------------------------------


def test_missing_training_images_folder(tmp_path):
    task = tmp_path / "Task900_Check"
    task.mkdir()
    (task / "dataset.json").write_text(json.dumps(DATASET))
    problem = only_problem(task)
    assert problem.path == task / "raw_splitted" / "imagesTr" and "missing" in problem.message


def test_missing_modality_file(task):
    image(task, mod=1).unlink()
    problem = only_problem(task)
    assert problem.path == image(task, mod=1)
    assert "missing modality 1 of case case0" in problem.message


def test_modality_beyond_dataset_json(task):
    edit_dataset(task, {"modalities": {"0": "CT"}})
    problems = check_raw_dataset(task)
    extra = {image(task, c, 1, s) for c, s in [("case0", "Tr"), ("case1", "Tr"), ("test0", "Ts")]}
    assert {p.path for p in problems} == extra
    assert all("add it to 'modalities'" in p.message for p in problems)


def test_misnamed_image_file(task):
    path = image(task).parent / "case2.nii.gz"
    path.write_bytes(image(task).read_bytes())
    problem = only_problem(task)
    assert problem.path == path and "not named CASE_XXXX" in problem.message


def test_missing_label_of_training_case(task):
    label(task).unlink()
    label(task, ending=".json").unlink()
    problem = only_problem(task)
    assert problem.path == label(task) and "missing label of case case0" in problem.message


def test_missing_test_label_only_matters_with_test_labels(task):
    label(task, "test0", split="Ts").unlink()
    label(task, "test0", ".json", split="Ts").unlink()
    assert only_problem(task).path == label(task, "test0", split="Ts")
    edit_dataset(task, {"test_labels": False})
    assert check_raw_dataset(task) == []


def test_missing_case_json(task):
    label(task, ending=".json").unlink()
    problem = only_problem(task)
    assert problem.path == label(task, ending=".json") and "instances" in problem.message


@pytest.mark.parametrize(
    "text", ['{"instances": {"1": 0', '{"objects": {}}', '{"instances": {"one": 0}}']
)
def test_invalid_case_json(task, text):
    label(task, ending=".json").write_text(text)
    problem = only_problem(task)
    assert problem.path == label(task, ending=".json")


def test_label_without_image(task):
    for mod in range(2):
        image(task, "case1", mod).unlink()
    problems = check_raw_dataset(task)
    assert {p.path for p in problems} == {label(task, "case1"), label(task, "case1", ".json")}
    assert all("label without image" in p.message for p in problems)


def test_unreadable_image(task):
    image(task).write_bytes(b"not an image")
    problem = only_problem(task)
    assert problem.path == image(task) and "cannot read" in problem.message


# --- content ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"spacing": [2.5, 0.75, 0.8]}, "other spacing"),
        ({"origin": [-3.0, -2.5, -100.0]}, "other origin"),
        ({"direction": [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]}, "other direction"),
    ],
)
def test_label_geometry_differs_from_image(task, change, words):
    instance_map = np.zeros(SHAPE, dtype=np.uint8)
    write_image(instance_map, label(task), {**GEOMETRY, **change})
    label(task, ending=".json").write_text('{"instances": {}}')
    problem = only_problem(task)
    assert problem.path == label(task) and words in problem.message
    assert "resample" in problem.message


def test_label_shape_differs_from_image(task):
    write_image(np.zeros((4, 8, 9), dtype=np.uint8), label(task), GEOMETRY)
    label(task, ending=".json").write_text('{"instances": {}}')
    problem = only_problem(task)
    assert problem.path == label(task) and "other shape (4, 8, 9)" in problem.message


def test_modalities_must_share_geometry(task):
    moved = {**GEOMETRY, "origin": [0.0, 0.0, 0.0]}
    write_image(np.zeros(SHAPE, dtype=np.float32), image(task, mod=1), moved)
    problem = only_problem(task)
    assert problem.path == image(task, mod=1) and "case0_0000" in problem.message


def test_geometry_within_tolerance_is_accepted(task):
    nudged = {
        "spacing": [2.5 * (1 + 1e-4), 0.75, 0.75],
        "origin": [-3.0 + 1e-4, -3.0, -100.0],
        "direction": GEOMETRY["direction"],
    }
    write_image(np.zeros(SHAPE, dtype=np.float32), image(task, mod=1), nudged)
    assert check_raw_dataset(task) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_image_values(task, bad):
    array = np.zeros(SHAPE, dtype=np.float32)
    array[0, 0, :3] = bad
    # ITK's NIfTI writer turns NaN into 0; MetaImage keeps it
    image(task, mod=1).unlink()
    path = image(task, mod=1).with_name("case0_0001.mha")
    write_image(array, path, GEOMETRY)
    problem = only_problem(task)
    assert problem.path == path and "3 voxels are NaN or inf" in problem.message


def test_image_dimension_must_match_dim(task):
    edit_dataset(task, {"dim": 2})
    problems = check_raw_dataset(task)
    assert image(task) in {p.path for p in problems}
    assert all("dim 2" in p.message for p in problems), format_problems(problems)


def test_ids_in_map_without_class(task):
    label(task, ending=".json").write_text('{"instances": {"1": 0}}')
    problem = only_problem(task)
    assert problem.path == label(task, ending=".json") and "ids [2]" in problem.message
    assert "case0.nii.gz" in problem.message


def test_ids_in_json_missing_from_map(task):
    label(task, ending=".json").write_text('{"instances": {"1": 0, "2": 1, "7": 0}}')
    problem = only_problem(task)
    assert problem.path == label(task, ending=".json") and "ids [7] are not in" in problem.message


def test_class_unknown_to_dataset_json(task):
    label(task, ending=".json").write_text('{"instances": {"1": 0, "2": 3}}')
    problem = only_problem(task)
    assert problem.path == label(task, ending=".json") and "classes [3]" in problem.message


@pytest.mark.parametrize(
    ("value", "dtype", "words"),
    [(40000, np.int32, "exceeds 32767"), (-1, np.int16, "negative"), (1.5, np.float32, "integer")],
)
def test_invalid_instance_values(task, value, dtype, words):
    instance_map = np.zeros(SHAPE, dtype=dtype)
    instance_map[0, 0, 0] = value
    write_image(instance_map, label(task), GEOMETRY)
    problem = only_problem(task)
    assert problem.path == label(task) and words in problem.message


def test_all_problems_are_listed_at_once(task):
    image(task, "case1", mod=1).unlink()
    label(task, ending=".json").write_text('{"instances": {"1": 0, "2": 5}}')
    (task / "raw_splitted" / "labelsTr" / "orphan.nii.gz").write_bytes(b"")
    problems = check_raw_dataset(task)
    paths = {p.path.name for p in problems}
    assert paths == {"case1_0001.nii.gz", "case0.json", "orphan.nii.gz"}
    text = format_problems(problems)
    assert "3 problem(s)" in text and all(str(p.path) in text for p in problems)
