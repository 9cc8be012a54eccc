"""Sliding windows over a stored case: the tile grid, lazy tile reading and mirroring.

A case is cut into tiles of the plan's patch size that overlap by ``overlap`` (nnU-Net's
step rule, ``compute_steps_for_sliding_window``). An axis shorter than the patch is padded
symmetrically with zeros, so that axis has a single tile whose start is negative in case
coordinates. For a ``2d`` plan on 3D data the tile is one slice thick on axis 0 and every
slice is a tile start on that axis.

Every tile is read from the (blosc2) array only when its batch is predicted, so the memory
of a prediction is bounded by one batch of tiles plus the boxes, never the whole volume.

Coordinates: all tile starts and boxes here are in voxels of the *stored* case (nndet's box
convention, ``hi`` exclusive); a padded tile has a negative start.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
from torch import Tensor

from nndet.planning.plan import Plan


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one case: the C-order product of per-axis starts.

    Attributes:
        image_shape: spatial shape of the stored case, ``data_dim`` entries.
        tile_size: tile extent per axis, ``data_dim`` entries (1 on the slice axis of a
            ``2d`` plan on 3D data).
        axis_starts: per axis, the tile starts in case coordinates (negative where padded).
    """

    image_shape: tuple[int, ...]
    tile_size: tuple[int, ...]
    axis_starts: tuple[tuple[int, ...], ...]

    @property
    def num_tiles(self) -> int:
        return int(np.prod([len(s) for s in self.axis_starts]))

    def starts(self) -> Tensor:
        """Start corner of every tile: long ``[T, D]`` in C order over the axes."""
        return torch.tensor(list(itertools.product(*self.axis_starts)), dtype=torch.long).reshape(
            -1, len(self.image_shape)
        )

    def tile_boxes(self) -> Tensor:
        """Every tile as a box: float ``[T, 2*D]`` in case coordinates."""
        starts = self.starts().float()
        size = torch.tensor(self.tile_size, dtype=torch.float32)
        return torch.cat([starts, starts + size], dim=1)


def _axis_starts(length: int, tile: int, overlap: float) -> tuple[int, ...]:
    """Tile starts along one axis of ``length`` voxels for tiles of ``tile`` voxels."""
    if tile >= length:
        # One tile, centred: the case is padded by (tile - length) // 2 voxels below.
        return (-((tile - length) // 2),)
    if tile == 1:  # the slice axis of a 2d plan: every slice once
        return tuple(range(length))
    (steps,) = compute_steps_for_sliding_window((length,), (tile,), 1.0 - overlap)
    return tuple(int(s) for s in steps)


def make_tile_grid(
    image_shape: Sequence[int], tile_size: Sequence[int], overlap: float = 0.5
) -> TileGrid:
    """Tiles covering a case with at least ``overlap`` of a tile shared by neighbours.

    Args:
        image_shape: spatial shape of the stored case.
        tile_size: tile extent per axis, same length as ``image_shape``.
        overlap: fraction of the tile shared by neighbouring tiles, in ``[0, 1)``; nnU-Net's
            step size is ``1 - overlap`` (0.5 as in nnU-Net and nnDetection).
    """
    if len(image_shape) != len(tile_size):
        raise ValueError(f"image shape {list(image_shape)} and tile {list(tile_size)} differ")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    starts = tuple(
        _axis_starts(int(n), int(t), overlap) for n, t in zip(image_shape, tile_size, strict=True)
    )
    return TileGrid(tuple(int(n) for n in image_shape), tuple(int(t) for t in tile_size), starts)


def read_tile(data, start: Sequence[int], tile_size: Sequence[int]) -> np.ndarray:
    """Read one tile ``[C, *tile_size]`` from ``data [C, *spatial]``, zero outside the case.

    ``data`` is anything sliceable like a numpy array (a blosc2 NDArray reads only the
    chunks the tile touches).
    """
    shape = data.shape[1:]
    src, dst = [slice(None)], [slice(None)]
    for s, t, n in zip(start, tile_size, shape, strict=True):
        lo, hi = max(int(s), 0), min(int(s) + int(t), int(n))
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    part = np.asarray(data[tuple(src)], dtype=np.float32)
    if part.shape[1:] == tuple(tile_size):
        return part
    tile = np.zeros((data.shape[0], *tile_size), dtype=np.float32)
    tile[tuple(dst)] = part
    return tile


def iter_tile_batches(data, grid: TileGrid, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Read the tiles of ``grid`` lazily, ``batch_size`` at a time.

    Yields:
        ``(indices long [b], images float [b, C, *tile_size])`` on the CPU.
    """
    starts = grid.starts()
    for first in range(0, len(starts), batch_size):
        index = torch.arange(first, min(first + batch_size, len(starts)))
        tiles = [read_tile(data, starts[i].tolist(), grid.tile_size) for i in index.tolist()]
        yield index, torch.from_numpy(np.stack(tiles))


def mirror_combinations(dim: int, enabled: bool = True) -> list[tuple[int, ...]]:
    """All ``2**dim`` subsets of the spatial axes to flip, the identity first.

    Args:
        dim: spatial dimensions of the network input.
        enabled: ``False`` gives only the identity (no test-time mirroring).
    """
    if not enabled:
        return [()]
    axes = range(dim)
    return [c for r in range(dim + 1) for c in itertools.combinations(axes, r)]


def flip_boxes(boxes: Tensor, axes: Sequence[int], size: Sequence[int]) -> Tensor:
    """Boxes predicted on a flipped tile, expressed in the unflipped tile.

    Flipping axis ``a`` of a tile of ``size[a]`` voxels maps ``x`` to ``size[a] - x``, so a
    box's corners swap: ``lo' = size - hi`` and ``hi' = size - lo``. The map is its own
    inverse.

    Args:
        boxes: float [N, 2*D] in the tile's coordinates.
        axes: the flipped spatial axes (0-based, of the tile).
        size: the tile's shape, D entries.
    """
    if not axes:
        return boxes
    dim = len(size)
    out = boxes.clone()
    for a in axes:
        out[:, a] = size[a] - boxes[:, a + dim]
        out[:, a + dim] = size[a] - boxes[:, a]
    return out


class Predictor(Protocol):
    def predict(self, images: Tensor) -> list[dict[str, Tensor]]: ...


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def tile_size_for(plan: Plan) -> list[int]:
    """The tile in stored-case axes: the patch, with a 1-voxel slice axis for a 2d plan on 3D."""
    extra = plan.data_dim - plan.dim
    if extra not in (0, 1):
        raise ValueError(f"plan {plan.name}: a {plan.dim}D network on {plan.data_dim}D data")
    return [1] * extra + list(plan.patch_size)


def _autocast(device: torch.device):
    # Mixed precision on CUDA as in nnU-Net's predictor; the CPU stays in float32.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _to_case(boxes: Tensor, axes: Sequence[int], patch: Sequence[int], start: Tensor) -> Tensor:
    """Boxes of a (flipped) network input ``[N, 2*dim]`` -> stored-case boxes ``[N, 2*D]``.

    Undoes the flip, adds the slice extent ``[0, 1)`` when the tile has a slice axis that the
    network did not see (``len(start) > len(patch)``), then shifts by the tile's start.
    """
    boxes = flip_boxes(boxes.float().cpu(), axes, patch)
    dim = len(patch)
    if len(start) > dim:
        zeros = torch.zeros(len(boxes), 1)
        boxes = torch.cat([zeros, boxes[:, :dim], zeros + 1, boxes[:, dim:]], dim=1)
    return boxes + torch.cat([start, start])


def predict_views(
    models: Sequence[Predictor],
    data: Any,
    grid: TileGrid,
    net_dim: int,
    mirror: bool = True,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Run every model on every mirror of every tile; keep all raw boxes.

    Args:
        models: the ensemble (one per fold), each with ``predict`` (module docstring).
        data: float [C, *spatial] stored case (numpy or blosc2; read tile by tile).
        grid: the tiles, in stored-case axes.
        net_dim: 2 or 3; a 2D network on 3D data gets the tile's slice axis squeezed away.
        mirror: predict all ``2**net_dim`` flips of each tile.
        batch_size: tiles per network call.
        device: where the networks run.

    Returns:
        The tensor fields of :class:`CaseViews` (``boxes`` [N, 2*data_dim] in stored-case
        voxels, ``scores``, ``labels``, ``view_ids``, ``view_model``, ``view_mirror``,
        ``view_tile``) and ``mirror_axes``.
    """
    device = resolve_device(device)
    squeeze = len(grid.image_shape) - net_dim  # 1 for a 2d plan on 3D data: one-slice tiles
    patch = list(grid.tile_size[squeeze:])
    mirrors = mirror_combinations(net_dim, mirror)
    starts = grid.starts().float()
    parts: dict[str, list] = {k: [] for k in ("boxes", "scores", "labels", "view_ids")}
    table: list[tuple[int, int, int]] = []  # (model, mirror, tile) of each view

    for model in models:
        if isinstance(model, torch.nn.Module):
            model.to(device).eval()
    with torch.inference_mode():
        for tiles, images in iter_tile_batches(data, grid, batch_size):
            images = images.to(device)[:, :, 0] if squeeze else images.to(device)
            for (m, model), (k, axes) in itertools.product(enumerate(models), enumerate(mirrors)):
                flipped = images.flip([a + 2 for a in axes]) if axes else images
                with _autocast(device):
                    results = model.predict(flipped)
                for t, result in zip(tiles.tolist(), results, strict=True):
                    n = len(result["boxes"])
                    parts["boxes"].append(_to_case(result["boxes"], axes, patch, starts[t]))
                    parts["scores"].append(result["scores"].float().cpu())
                    parts["labels"].append(result["labels"].long().cpu())
                    parts["view_ids"].append(torch.full((n,), len(table), dtype=torch.long))
                    table.append((m, k, t))

    views = torch.tensor(table, dtype=torch.long).reshape(-1, 3)
    fields: dict[str, Any] = {key: torch.cat(values) for key, values in parts.items()}
    fields["boxes"] = fields["boxes"].reshape(-1, 2 * len(grid.image_shape))
    fields.update(
        view_model=views[:, 0].contiguous(),
        view_mirror=views[:, 1].contiguous(),
        view_tile=views[:, 2].contiguous(),
        mirror_axes=[list(a) for a in mirrors],
    )
    return fields
