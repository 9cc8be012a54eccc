"""The geometry chain of prediction, checked in physical space as the issue's "done" check.

A blob detector stands in for a trained network, so every box it finds is the object's;
the case is 3D, anisotropic, with a rotated direction and a plan that transposes and
resamples it. Each written ``center_world`` must then fall inside the object's box when
mapped through the label image's own geometry by SimpleITK.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from inference_fakes import BlobModel, make_plan

from nndet.data.instances import instance_boxes
from nndet.data.io import image_from_array
from nndet.data.predictions import read_case_prediction
from nndet.inference.consolidate import InferenceSettings
from nndet.inference.predict_folder import predict_images

# a rotation about the slice axis, so x and y of the world mix
_C, _S = np.cos(0.3), np.sin(0.3)
GEOMETRY = {
    "spacing": [3.0, 0.7, 0.9],
    "origin": [-20.0, 14.0, 7.5],
    "direction": [_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0],
    "shape": [20, 44, 36],
}
OBJECTS = [[3, 5, 4, 7, 15, 12], [12, 26, 20, 16, 38, 31]]  # [lo0..2, hi0..2], array voxels


def test_center_world_lies_inside_the_labelled_object(tmp_path):
    image = np.zeros(GEOMETRY["shape"], dtype=np.float32)
    instance_map = np.zeros(GEOMETRY["shape"], dtype=np.int16)
    for i, box in enumerate(OBJECTS, start=1):
        region = tuple(slice(box[a], box[a + 3]) for a in range(3))
        image[region], instance_map[region] = 5.0, i
    image += np.random.default_rng(0).uniform(0.0, 0.2, image.shape).astype(np.float32)
    # a plan that transposes the raw axes and resamples to another spacing
    plan = dataclasses.replace(
        make_plan(3, [16, 24, 24]), transpose=[0, 2, 1], spacing=[2.0, 1.2, 1.0]
    )

    path = predict_images(
        tmp_path, "vol", image[None], GEOMETRY, [BlobModel(threshold=1.0, slope=0.0)], plan,
        InferenceSettings(), None, score_threshold=0.5, device="cpu",
    )  # fmt: skip
    record = read_case_prediction(path)
    shown = record["scores"] >= record["score_threshold"]
    assert shown.sum() == len(OBJECTS)

    label = image_from_array(instance_map, GEOMETRY)
    truth = instance_boxes(instance_map)
    hits = set()
    for center in record["center_world"][shown]:
        index_xyz = label.TransformPhysicalPointToContinuousIndex([float(c) for c in center])
        voxel = np.array(index_xyz[::-1]) + 0.5  # ITK index -> nndet's continuous coordinate
        inside = [
            i for i, box in truth.items()
            if (voxel >= box[:3]).all() and (voxel <= box[3:]).all()
        ]  # fmt: skip
        assert len(inside) == 1, (center, voxel)
        hits.add(inside[0])
        assert instance_map[tuple(np.floor(voxel).astype(int))] == inside[0]
    assert hits == set(truth)
