"""Check predicted boxes in physical space: does every confident box sit on a real object?

For every box scoring at least ``--min-score`` in a prediction folder (``CASE_boxes.json`` as
``nndet_predict`` writes them), its ``center_world`` is mapped into the label image with the
label's own SimpleITK geometry and must fall inside the bounding box of an object there.

    .venv/bin/python scripts/check_world_centres.py --pred PRED_DIR --gt LABELS_DIR

Prints one line per confident box that misses and a summary; exits 1 when any box misses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nndet.data.instances import instance_boxes
from nndet.data.predictions import read_case_prediction


def check_case(prediction: Path, label: Path, min_score: float) -> tuple[int, list[str]]:
    """Number of confident boxes of one case and a message for each that misses."""
    case = read_case_prediction(prediction)
    image = sitk.ReadImage(str(label))
    boxes = np.array(list(instance_boxes(sitk.GetArrayFromImage(image)).values())).reshape(
        -1, 2 * image.GetDimension()
    )
    dim = image.GetDimension()
    misses, count = [], 0
    for score, centre in zip(case["scores"], case["center_world"], strict=True):
        if score < min_score:
            continue
        count += 1
        # ITK continuous index (x, y, z), voxel centres on integers; our boxes are in array
        # order with voxel i spanning [i, i + 1), hence the reversal and the + 0.5.
        index = image.TransformPhysicalPointToContinuousIndex([float(c) for c in centre])
        point = np.array(index[::-1]) + 0.5
        inside = ((boxes[:, :dim] <= point) & (point <= boxes[:, dim:])).all(axis=1)
        if not inside.any():
            misses.append(f"{case['case_id']}: box scoring {score:.2f} at {list(centre)} mm")
    return count, misses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", type=Path, required=True, help="folder of CASE_boxes.json")
    parser.add_argument("--gt", type=Path, required=True, help="labels folder (instance maps)")
    parser.add_argument("--min-score", type=float, default=0.5, help="default 0.5")
    args = parser.parse_args()

    total, misses = 0, []
    for prediction in sorted(args.pred.glob("*_boxes.json")):
        case_id = prediction.name[: -len("_boxes.json")]
        labels = [p for p in args.gt.glob(f"{case_id}.*") if p.suffix != ".json"]
        if not labels:
            sys.exit(f"no label image for {case_id} in {args.gt}")
        count, case_misses = check_case(prediction, labels[0], args.min_score)
        total += count
        misses += case_misses
    for line in misses:
        print(line)
    print(
        f"{total - len(misses)} of {total} boxes scoring >= {args.min_score} lie inside an object"
    )
    sys.exit(1 if misses else 0)


if __name__ == "__main__":
    main()
