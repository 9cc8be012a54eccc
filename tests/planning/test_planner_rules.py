"""The planner on synthetic fingerprints: dimension, spacing, transposition, budget, levels."""

from __future__ import annotations

import numpy as np
import pytest

import nndet
from nndet.planning.plan import load_plans, save_plans
from nndet.planning.planner import plan_experiment, target_spacing, transposition
from nndet.planning.topology import build_topology, detection_levels


def _fingerprint(num_cases, shape, spacing, sizes_mm, seed=0, modality="noise"):
    """A fingerprint with only what the planner reads: per-case geometry, objects, intensity."""
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(num_cases):
        count = int(rng.integers(0, 4))
        objects = [
            {"id": j + 1, "class": int(rng.integers(0, 2)), "size_mm": list(sizes_mm(rng))}
            for j in range(count)
        ]
        case_spacing = list(spacing(rng)) if callable(spacing) else list(spacing)
        cases[f"case{i:03d}"] = {
            "spacing": case_spacing,
            "shape_after_crop": list(shape),
            "objects": objects,
        }
    intensity = [{"mean": -50.0, "std": 80.0, "percentile_00_5": -300.0, "percentile_99_5": 150.0}]
    dataset_json = {
        "dim": len(shape),
        "modalities": {"0": modality},
        "labels": {"0": "a", "1": "b"},
    }
    return {"cases": cases, "intensity": intensity}, dataset_json


def _circles(rng):
    return [20.0 + rng.integers(-1, 2), 20.0 + rng.integers(-1, 2)]


def _nodules(rng):
    d = rng.uniform(3, 20)
    return [d, d, d]


@pytest.fixture(scope="module")
def toy_2d():
    return _fingerprint(40, (320, 320), (1.0, 1.0), _circles)


@pytest.fixture(scope="module")
def nodules_3d():
    # Task104-like: slice spacing 2.5 mm vs 0.75 mm in-plane (ratio 3.3)
    return _fingerprint(30, (48, 160, 160), (2.5, 0.75, 0.75), _nodules, modality="CT")


@pytest.fixture(scope="module")
def plans_2d_gpu(toy_2d):
    return plan_experiment(*toy_2d, target="gpu", gpu_memory_gb=8)


@pytest.fixture(scope="module")
def plans_3d_gpu(nodules_3d):
    return plan_experiment(*nodules_3d, target="gpu", gpu_memory_gb=8)


def test_2d_data_gives_one_default_2d_plan(plans_2d_gpu):
    assert list(plans_2d_gpu.plans) == ["2d"] and plans_2d_gpu.default == "2d"
    plan = plans_2d_gpu.get()
    assert plan.dim == plan.data_dim == 2
    assert plan.transpose == [0, 1] and plan.spacing == [1.0, 1.0]
    assert plan.normalization[0].scheme == "zscore"
    assert plan.anchor_iou >= 0.7
    assert plans_2d_gpu.nndet_version == nndet.__version__


def test_mildly_anisotropic_3d_gives_only_3d_at_the_median_spacing(plans_3d_gpu):
    assert list(plans_3d_gpu.plans) == ["3d"] and plans_3d_gpu.default == "3d"
    plan = plans_3d_gpu.get("3d")
    assert plan.spacing == pytest.approx([2.5, 0.75, 0.75])
    assert plan.transpose == [0, 1, 2]
    assert plan.anchor_iou >= 0.7
    assert len(plan.anchors) == len(plan.detection_levels)
    assert all(len(level) == plan.num_anchors and len(level[0]) == 3 for level in plan.anchors)


def test_ct_modality_clips_to_foreground_percentiles(plans_3d_gpu):
    norm = plans_3d_gpu.get().normalization[0]
    assert norm.scheme == "ct"
    assert (norm.lower, norm.upper, norm.mean, norm.std) == (-300.0, 150.0, -50.0, 80.0)


def test_strongly_anisotropic_3d_adds_a_2d_plan_on_the_slices():
    fingerprint, dataset_json = _fingerprint(20, (20, 200, 200), (5.0, 0.8, 0.8), _nodules)
    plans = plan_experiment(fingerprint, dataset_json, target="cpu")
    assert sorted(plans.plans) == ["2d", "3d"] and plans.default == "3d"
    plan_2d = plans.get("2d")
    assert plan_2d.dim == 2 and plan_2d.data_dim == 3
    assert len(plan_2d.patch_size) == 2 and len(plan_2d.spacing) == 3
    assert len(plan_2d.anchors[0][0]) == 2


def test_slice_axis_goes_first_in_storage():
    fingerprint, dataset_json = _fingerprint(10, (160, 160, 40), (0.7, 0.7, 3.0), _nodules)
    plans = plan_experiment(fingerprint, dataset_json, target="cpu")
    plan = plans.get("3d")
    assert plan.transpose == [2, 0, 1]
    assert plan.spacing == pytest.approx([3.0, 0.7, 0.7])
    assert plan.median_shape == [40, 160, 160]


def test_target_spacing_takes_10th_percentile_on_a_thin_coarse_axis():
    spacings = np.array([[s, 1.0, 1.0] for s in (3.0, 5.0, 5.0, 6.0, 5.0, 4.0, 5.0, 5.0, 6.0, 5.0)])
    shapes = np.tile([20, 256, 256], (10, 1))
    target, notes = target_spacing(spacings, shapes)
    assert target[0] == pytest.approx(np.percentile(spacings[:, 0], 10))
    assert target[0] < np.median(spacings[:, 0]) and notes


def test_target_spacing_is_the_median_when_isotropic():
    spacings = np.array([[1.0, 1.0, 1.0], [2.0, 1.0, 1.0], [1.5, 1.0, 1.0]])
    target, notes = target_spacing(spacings, np.tile([100, 100, 100], (3, 1)))
    assert target.tolist() == [1.5, 1.0, 1.0] and not notes


def test_transposition_is_identity_in_2d():
    assert transposition(np.array([3.0, 1.0])) == [0, 1]


def test_cpu_plan_is_smaller_than_gpu_plan(toy_2d, plans_2d_gpu):
    cpu = plan_experiment(*toy_2d, target="cpu").get()
    gpu = plans_2d_gpu.get()
    assert np.prod(cpu.patch_size) < np.prod(gpu.patch_size)
    assert max(cpu.topology.features_per_stage) < max(gpu.topology.features_per_stage)
    assert cpu.target == "cpu" and cpu.gpu_memory_gb is None
    assert cpu.epochs * cpu.iters_per_epoch < gpu.epochs * gpu.iters_per_epoch


def test_more_gpu_memory_never_gives_a_smaller_patch_or_batch():
    fingerprint, dataset_json = _fingerprint(60, (96, 256, 256), (1.0, 1.0, 1.0), _nodules)
    small = plan_experiment(fingerprint, dataset_json, target="gpu", gpu_memory_gb=4).get()
    large = plan_experiment(fingerprint, dataset_json, target="gpu", gpu_memory_gb=32).get()
    assert all(a <= b for a, b in zip(small.patch_size, large.patch_size, strict=True))
    assert np.prod(small.patch_size) < np.prod(large.patch_size)
    assert small.batch_size <= large.batch_size
    assert large.gpu_memory_gb == 32


def test_small_patch_gets_fewer_detection_levels():
    topology, patch = build_topology([1.0, 1.0], [32, 32], 16, 256)
    assert detection_levels(topology, patch) == [2, 3]
    topology, patch = build_topology([1.0, 1.0], [256, 256], 16, 256)
    assert detection_levels(topology, patch) == [2, 3, 4, 5]
    topology, patch = build_topology([1.0, 1.0], [8, 8], 16, 256)
    assert detection_levels(topology, patch) == [1]


def test_detection_level_feature_maps_are_at_least_four_voxels(plans_3d_gpu):
    plan = plans_3d_gpu.get()
    for stride in plan.level_strides():
        assert min(p // s for p, s in zip(plan.patch_size, stride, strict=True)) >= 4


def test_plans_round_trip_through_json(plans_3d_gpu, tmp_path):
    path = tmp_path / "preprocessed" / "plans.json"
    save_plans(plans_3d_gpu, path)
    loaded = load_plans(path)
    assert loaded == plans_3d_gpu
    assert loaded.get().topology.num_stages == plans_3d_gpu.get().topology.num_stages


def test_dataset_without_objects_still_plans():
    fingerprint, dataset_json = _fingerprint(6, (64, 64), (1.0, 1.0), _circles)
    for case in fingerprint["cases"].values():
        case["objects"] = []
    plan = plan_experiment(fingerprint, dataset_json, target="cpu").get()
    assert plan.anchor_iou == 0.0 and plan.extra["notes"]
