"""The example tasks: deterministic, and drawn as DESIGN.md specifies them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nndet.cli.example import main
from nndet.data import example
from nndet.data.check import check_raw_dataset
from nndet.data.dataset import list_cases, read_case
from nndet.data.example import write_example_task
from nndet.data.instances import instance_boxes


def load_split(task: Path, split: str = "Tr") -> list[tuple[np.ndarray, np.ndarray, dict, dict]]:
    """(image [*spatial], instance map, {id: class}, geometry) of every case of a split."""
    out = []
    for case in list_cases(task, split):
        images, instance_map, instances, geometry = read_case(case)
        out.append((images[0], instance_map, instances, geometry))
    return out


def disc(diameter: int, hole: int = 0) -> np.ndarray:
    """Oracle: pixels of a ``diameter`` window whose centre is within the disc, not the hole."""
    mask = np.zeros((diameter, diameter), dtype=bool)
    c = diameter / 2
    for i in range(diameter):
        for j in range(diameter):
            r = np.hypot(i + 0.5 - c, j + 0.5 - c)
            mask[i, j] = r <= c and (hole == 0 or r > hole / 2)
    return mask


@pytest.fixture(scope="module")
def toys(tmp_path_factory) -> dict[int, Path]:
    """Each 2D toy task, 6 training and 2 test images without noise."""
    root = tmp_path_factory.mktemp("toys")
    return {t: write_example_task(t, root, 6, 2, noise=0.0, seed=3) for t in (101, 102, 103)}


@pytest.fixture(scope="module")
def nodules(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nodules")
    return write_example_task(104, root, num_train=10, num_test=2, seed=1)


def test_same_seed_writes_identical_cases(tmp_path):
    a = write_example_task(101, tmp_path / "a", 3, 1, seed=7)
    b = write_example_task(101, tmp_path / "b", 3, 1, seed=7)
    for split in ("Tr", "Ts"):
        for (ia, la, ja, _), (ib, lb, jb, _) in zip(
            load_split(a, split), load_split(b, split), strict=True
        ):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(la, lb)
            assert ja == jb


def test_other_seed_writes_other_cases(tmp_path):
    a = load_split(write_example_task(101, tmp_path / "a", 2, 0, seed=7))
    b = load_split(write_example_task(101, tmp_path / "b", 2, 0, seed=8))
    assert not np.array_equal(a[0][0], b[0][0])
    assert not np.array_equal(a[0][1], b[0][1])


def test_case_does_not_depend_on_the_number_of_cases(tmp_path):
    few = load_split(write_example_task(101, tmp_path / "a", 2, 0, seed=2))
    many = load_split(write_example_task(101, tmp_path / "b", 3, 0, seed=2))
    for (ia, la, ja, _), (ib, lb, jb, _) in zip(few, many[:2], strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
        assert ja == jb


def test_toy_tasks_have_labelled_splits_and_pass_the_check(toys):
    for number, task in toys.items():
        meta = json.loads((task / "dataset.json").read_text())
        assert meta["dim"] == 2 and meta["test_labels"] is True
        assert meta["task"] == task.name and task.name.startswith(f"Task{number}_")
        assert len(list_cases(task, "Tr")) == 6 and len(list_cases(task, "Ts")) == 2
        assert check_raw_dataset(task) == []


def test_toy_images_are_objects_raised_by_02_on_zero(toys):
    for image, instance_map, instances, _ in load_split(toys[103]):
        assert image.shape == (320, 320)
        np.testing.assert_allclose(np.unique(image), [0.0, 0.2], atol=1e-6)
        np.testing.assert_array_equal(image > 0, instance_map > 0)
        assert 1 <= len(instances) <= 5


def test_toy_noise_is_uniform_below_noise(tmp_path):
    task = write_example_task(101, tmp_path, 2, 0, noise=0.5, seed=0)
    image, instance_map, _, _ = load_split(task)[0]
    background = image[instance_map == 0]
    assert background.min() >= 0 and background.max() < 0.5
    assert abs(background.mean() - 0.25) < 0.01  # mean of U[0, 0.5)
    assert abs(image[instance_map > 0].mean() - 0.45) < 0.03


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (101, {0: disc(20), 1: disc(20, hole=4)}),  # hole cut out of the label
        (102, {0: disc(20), 1: disc(20)}),  # the donut's label is the full disc
        (103, {0: disc(19), 1: disc(20)}),
    ],
)
def test_toy_labels_are_the_specified_discs(toys, number, expected):
    seen = set()
    for _, instance_map, instances, _ in load_split(toys[number]):
        boxes = instance_boxes(instance_map)
        assert set(boxes) == set(instances)
        for index, cls in instances.items():
            lo, hi = np.array(boxes[index][:2]), np.array(boxes[index][2:])
            window = instance_map[lo[0] : hi[0], lo[1] : hi[1]] == index
            np.testing.assert_array_equal(window, expected[cls])
            seen.add(cls)
    assert seen == {0, 1}


def test_donut_hole_is_in_the_image_of_both_donut_tasks(toys):
    for number in (101, 102):
        for image, instance_map, instances, _ in load_split(toys[number]):
            for index, box in instance_boxes(instance_map).items():
                window = image[box[0] : box[2], box[1] : box[3]] > 0
                hole = 4 if instances[index] == 1 else 0
                np.testing.assert_array_equal(window, disc(20, hole))


def test_toy_objects_do_not_overlap(toys):
    for _, instance_map, _, _ in load_split(toys[101]) + load_split(toys[101], "Ts"):
        boxes = np.array(list(instance_boxes(instance_map).values()))
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                overlap = np.minimum(boxes[i, 2:], boxes[j, 2:]) - np.maximum(
                    boxes[i, :2], boxes[j, :2]
                )
                assert (overlap <= 0).any()


def test_nodule_volumes_are_anisotropic_ct(nodules):
    meta = json.loads((nodules / "dataset.json").read_text())
    assert meta["dim"] == 3 and meta["modalities"] == {"0": "CT"}
    offsets = []
    for image, _, _, geometry in load_split(nodules):
        z, y, x = geometry["spacing"]
        assert 2.0 <= z <= 3.0 and 0.7 <= y <= 0.8 and y == pytest.approx(x)
        assert image.ndim == 3 and image.shape[0] < image.shape[1]
        assert image.min() >= -1024 and image.max() < 400
        assert geometry["origin"] != [0.0, 0.0, 0.0]
        offsets.append(np.median(image[image > -200]))  # soft tissue, shifted per case
    assert np.ptp(offsets) > 5
    assert check_raw_dataset(nodules) == []


def test_some_nodule_cases_are_empty_and_others_not(nodules):
    counts = [len(instances) for _, _, instances, _ in load_split(nodules)]
    assert 0 in counts and max(counts) >= 1
    assert sum(c == 0 for c in counts) == 2  # a fifth of 10


def test_nodules_span_3_to_20_mm_and_classes_differ_in_density(nodules):
    mean_hu = {0: [], 1: []}
    for image, instance_map, instances, geometry in load_split(nodules):
        boxes = instance_boxes(instance_map)
        assert set(boxes) == set(instances)
        for index, cls in instances.items():
            extent_mm = (np.array(boxes[index][3:]) - boxes[index][:3]) * geometry["spacing"]
            assert extent_mm[1:].max() <= 20 + 2 * geometry["spacing"][1]
            assert extent_mm[1:].min() >= 3 - 2 * geometry["spacing"][1]
            mean_hu[cls].append(image[instance_map == index].mean())
    # solid nodules are soft tissue; part-solid ones are mostly ground glass
    assert min(mean_hu[0]) > max(mean_hu[1])


def test_existing_task_is_refused_unless_overwrite(tmp_path):
    task = write_example_task(103, tmp_path, 1, 0, seed=0)
    before = load_split(task)[0][0]
    with pytest.raises(FileExistsError, match="overwrite"):
        write_example_task(103, tmp_path, 1, 0, seed=1)
    write_example_task(103, tmp_path, 1, 0, seed=1, overwrite=True)
    assert not np.array_equal(load_split(task)[0][0], before)
    assert sorted(p.name for p in tmp_path.iterdir()) == [task.name]


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_write(*args, **kwargs):
        calls.append(1)
        raise OSError("disk full")

    monkeypatch.setattr(example, "write_image", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_example_task(101, tmp_path, 2, 0)
    assert calls and list(tmp_path.iterdir()) == []


def test_other_folder_with_the_same_number_is_refused(tmp_path):
    (tmp_path / "Task101_Mine").mkdir()
    with pytest.raises(FileExistsError, match="Task101_Mine"):
        write_example_task(101, tmp_path, 1, 0)


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError, match="Task104_ToyNodules3D"):
        example.example_task(7)


def test_cli_writes_then_skips_existing_tasks(tmp_path, capsys):
    assert main(["102", "Task103", "--num-train", "2", "--num-test", "1", "-o", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["Task102_ToyPatterns", "Task103_ToyScales"]
    assert len(list_cases(tmp_path / names[0], "Ts")) == 1
    assert str(tmp_path.resolve()) in capsys.readouterr().out

    assert main(["102", "--num-train", "2", "-o", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out


def test_cli_rejects_unknown_task(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["999", "-o", str(tmp_path)])
    assert exit_info.value.code == 2
