"""Pictures and instance maps of predicted boxes, for a person to look at.

Both draw the boxes a user should see: those scoring at or above the case's operating
point (``score_threshold`` of ``CASE_boxes.json``, chosen by the sweep), or at or above
:data:`DEFAULT_DISPLAY_THRESHOLD` when no sweep was run.

- ``OUT/png/CASE.png`` (2D): the image, windowed, with each box, its class and score.
  In 3D one picture per slice that holds a box's centre, ``OUT/png/CASE_slice0012.png``
  (axis 0, the slice axis): boxes centred there are drawn solid, others that cross the
  slice dashed. Pixels keep their physical aspect ratio.
- ``OUT/nifti/CASE.nii.gz``: the boxes as an instance map on the input's grid and
  geometry (id 1 is the best box, drawn on top where boxes overlap), with
  ``OUT/nifti/CASE.json`` (``{"instances": {id: class}, "scores": {id: score}}``), the
  raw labels layout, so the map opens in any viewer beside the image.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure  # a bare Figure renders with Agg; pyplot is never used
from matplotlib.patches import Rectangle

from nndet.data.io import atomic_write, save_json, write_image

PNG_DIR = "png"
NIFTI_DIR = "nifti"
# Without a sweep there is no operating point; half the maximal score shows the boxes the
# network is more sure of than not.
DEFAULT_DISPLAY_THRESHOLD = 0.5
_WINDOW_PERCENTILES = (0.5, 99.5)  # nnU-Net's foreground clipping percentiles
_FIGURE_WIDTH = 7.0  # inches, at 100 dpi: labels stay readable on small images


def display_threshold(record: Mapping[str, Any]) -> float:
    """The score at or above which a case's boxes are drawn."""
    threshold = record.get("score_threshold")
    return DEFAULT_DISPLAY_THRESHOLD if threshold is None else float(threshold)


def shown(record: Mapping[str, Any]) -> np.ndarray:
    """Indices of the boxes at or above the display threshold, best first: int [M]."""
    scores = np.asarray(record["scores"], dtype=np.float64)
    return np.flatnonzero(scores >= display_threshold(record))


def intensity_window(image: np.ndarray) -> tuple[float, float]:
    """Display range of an image: its 0.5 and 99.5 percentiles (on at most ~1M voxels)."""
    values = image.ravel()
    step = max(1, values.size // 1_000_000)
    lo, hi = np.percentile(values[::step], _WINDOW_PERCENTILES)
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def _colour(label: int) -> tuple[float, ...]:
    return matplotlib.colormaps["tab10"](label % 10)


def draw_boxes_png(
    path: Path | str,
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[str],
    label_ids: Sequence[int],
    window: tuple[float, float],
    spacing: Sequence[float],
    title: str,
    dashed: Sequence[bool] | None = None,
) -> Path:
    """Draw 2D boxes with their labels on an image and save it as PNG.

    Args:
        path: the PNG to write (atomically).
        image: float [H, W], array axes (rows are axis 0).
        boxes: float [M, 4] ``[lo0, lo1, hi0, hi1]`` in the image's voxels, ``hi`` exclusive.
        labels: M texts shown at the boxes (class and score).
        label_ids: M class ids (they pick the colours).
        window: display range of the intensities.
        spacing: the 2 pixel spacings (axis 0, axis 1): the picture keeps physical aspect.
        title: shown above the image.
        dashed: M flags: draw that box dashed (a 3D box that does not centre on this slice).
    """
    height, width = image.shape
    aspect = float(spacing[0]) / float(spacing[1])
    fig_height = max(2.0, _FIGURE_WIDTH * height * aspect / width) + 0.5
    fig = Figure(figsize=(_FIGURE_WIDTH, min(fig_height, 3 * _FIGURE_WIDTH)), dpi=100)
    ax = fig.add_subplot()
    # pixel i covers [i, i + 1), as in nndet's box convention
    extent = (0, width, height, 0)
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], extent=extent, aspect=aspect)
    for i, (lo0, lo1, hi0, hi1) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        colour = _colour(int(label_ids[i]))
        style = "--" if dashed is not None and dashed[i] else "-"
        outline = Rectangle((lo1, lo0), hi1 - lo1, hi0 - lo0, fill=False, edgecolor=colour)
        outline.set(linewidth=1.5, linestyle=style)
        ax.add_patch(outline)
        tag = {"facecolor": colour, "alpha": 0.8, "pad": 1, "edgecolor": "none"}
        ax.text(lo1, lo0, labels[i], fontsize=8, va="bottom", ha="left", bbox=tag)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return Path(path)


def _texts(record: Mapping[str, Any], index: np.ndarray) -> list[str]:
    return [f"{record['classes'][i]} {float(record['scores'][i]):.2f}" for i in index]


def write_png_overlays(
    out_dir: Path | str, record: Mapping[str, Any], image: np.ndarray
) -> list[Path]:
    """Pictures of one case's shown boxes (see the module docstring).

    Args:
        out_dir: the prediction folder (pictures go to its ``png/``).
        record: the case's prediction as :func:`nndet.data.predictions.read_case_prediction`
            returns it.
        image: float [*spatial], the first modality of the input, array axes.
    """
    folder = Path(out_dir) / PNG_DIR
    case_id, dim = record["case_id"], int(record["dim"])
    index, threshold = shown(record), display_threshold(record)
    boxes, label_ids = np.asarray(record["boxes"]), np.asarray(record["labels"])
    window, spacing = intensity_window(image), list(record["spacing"])
    note = f"{len(index)} boxes with score >= {threshold:.2f}"

    if dim == 2:
        path = folder / f"{case_id}.png"
        texts, title = _texts(record, index), f"{case_id}: {note}"
        return [
            draw_boxes_png(
                path, image, boxes[index], texts, label_ids[index], window, spacing, title
            )
        ]

    # 3D: one picture per slice (axis 0) through a shown box's centre
    centres = np.clip(np.floor((boxes[index, 0] + boxes[index, 3]) / 2), 0, image.shape[0] - 1)
    slices = sorted({int(c) for c in centres}) or [image.shape[0] // 2]
    paths = []
    for s in slices:
        crossing = index[(boxes[index, 0] <= s + 0.5) & (boxes[index, 3] > s + 0.5)]
        in_plane = boxes[crossing][:, [1, 2, 4, 5]]
        dashed = [int(c) != s for c in np.floor((boxes[crossing, 0] + boxes[crossing, 3]) / 2)]
        title = f"{case_id} slice {s} of {image.shape[0]}: {note}"
        path = folder / f"{case_id}_slice{s:04d}.png"
        texts, ids = _texts(record, crossing), label_ids[crossing]
        paths.append(
            draw_boxes_png(path, image[s], in_plane, texts, ids, window, spacing[1:], title, dashed)
        )
    return paths


def rasterise_boxes(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """An instance map of boxes: box ``i`` (0-based) gets id ``i + 1``; earlier ones on top.

    Args:
        boxes: float [M, 2*D] in nndet's convention, best first.
        shape: the D sizes of the image.

    Returns:
        int32 [*shape]. A voxel belongs to a box when its centre (``index + 0.5``) lies inside;
        a box thinner than a voxel still marks the voxel holding its centre.
    """
    dim = len(shape)
    instance_map = np.zeros(shape, dtype=np.int32)
    # paint the worst first so that the best box ends on top where boxes overlap
    for i in reversed(range(len(boxes))):
        box = np.asarray(boxes[i], dtype=np.float64)
        region = []
        for a in range(dim):
            lo, hi = math.ceil(box[a] - 0.5), math.ceil(box[a + dim] - 0.5)
            if hi <= lo:  # thinner than a voxel: the voxel of its centre
                lo = int(math.floor((box[a] + box[a + dim]) / 2))
                hi = lo + 1
            region.append(slice(max(lo, 0), min(hi, int(shape[a]))))
        instance_map[tuple(region)] = i + 1
    return instance_map


def write_instance_map(out_dir: Path | str, record: Mapping[str, Any]) -> Path:
    """``OUT/nifti/CASE.nii.gz`` and ``CASE.json`` of one case's shown boxes."""
    folder = Path(out_dir) / NIFTI_DIR
    index = shown(record)
    boxes = np.asarray(record["boxes"])[index]
    instance_map = rasterise_boxes(boxes, record["image_shape"])
    geometry = {k: record[k] for k in ("spacing", "origin", "direction")}
    path = folder / f"{record['case_id']}.nii.gz"
    write_image(instance_map, path, geometry)
    labels, scores = np.asarray(record["labels"]), np.asarray(record["scores"])
    save_json(
        {
            "instances": {str(n + 1): int(labels[i]) for n, i in enumerate(index)},
            "scores": {str(n + 1): float(scores[i]) for n, i in enumerate(index)},
            "score_threshold": display_threshold(record),
        },
        folder / f"{record['case_id']}.json",
    )
    return path


def overlays_missing(out_dir: Path | str, case_id: str, png: bool, nifti: bool) -> bool:
    """Whether a case lacks a picture or instance map that was asked for."""
    folder = Path(out_dir)
    no_png = png and not (
        (folder / PNG_DIR / f"{case_id}.png").is_file()
        or any((folder / PNG_DIR).glob(f"{glob.escape(case_id)}_slice[0-9][0-9][0-9][0-9].png"))
    )
    no_nifti = nifti and not (folder / NIFTI_DIR / f"{case_id}.nii.gz").is_file()
    return no_png or no_nifti


def write_overlays(
    out_dir: Path | str, record: Mapping[str, Any], image: np.ndarray, png: bool, nifti: bool
) -> list[Path]:
    """Write what was asked for of one case; returns the files written."""
    paths = write_png_overlays(out_dir, record, image) if png else []
    if nifti:
        paths.append(write_instance_map(out_dir, record))
    return paths
