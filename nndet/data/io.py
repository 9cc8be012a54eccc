"""Reading and writing images and JSON, always atomically (temporary name, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path`` and rename it into place.

    A crash leaves either the old file or none, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent
    )
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def save_json(obj: Any, path: Path | str, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically; numpy scalars and arrays become plain numbers/lists."""
    text = json.dumps(obj, indent=indent, default=_to_jsonable)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def load_json(path: Path | str) -> Any:
    """Read a JSON file, naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): fix or regenerate the file") from err


def read_image(path: Path | str) -> tuple[np.ndarray, dict]:
    """Read an image with SimpleITK.

    Returns:
        array: the voxels in SimpleITK's array order (axis 0 is the slice axis in 3D);
            a 2D RGB(A) PNG becomes grey by averaging its channels.
        geometry: ``spacing`` (array axis order), ``origin`` and ``direction`` (ITK x, y, z
            order, direction flattened row-major), ``shape``.
    """
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = array.astype(np.float32).mean(axis=-1)
    geometry = {
        "spacing": [float(s) for s in reversed(image.GetSpacing())],
        "origin": [float(o) for o in image.GetOrigin()],
        "direction": [float(d) for d in image.GetDirection()],
        "shape": list(array.shape),
    }
    return array, geometry


def image_from_array(array: np.ndarray, geometry: dict | None = None) -> sitk.Image:
    """A SimpleITK image of ``array`` (array order) with the geometry of :func:`read_image`."""
    image = sitk.GetImageFromArray(array)
    if geometry is not None:
        image.SetSpacing([float(s) for s in reversed(geometry["spacing"])])
        image.SetOrigin(geometry["origin"])
        image.SetDirection(geometry["direction"])
    return image


def write_image(array: np.ndarray, path: Path | str, geometry: dict | None = None) -> None:
    """Write ``array`` with the given geometry atomically; the format follows the file ending."""
    image = image_from_array(array, geometry)
    atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True))
