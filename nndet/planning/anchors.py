"""Anchor sizes fitted to the training objects.

Every detection level ``l`` gets the same ``A = m**D`` anchor shapes: all combinations of
``m`` base sizes per axis, each scaled by the level's stride along that axis
(``size = base[d][i_d] * stride_l[d]``), as in nnDetection's anchor scheme. The base sizes are
chosen to maximise the mean, over the training boxes, of the best IoU any anchor of any level
reaches with the box when both are centred on the same point (the *anchor coverage*).

Shape letters: N boxes, L detection levels, A anchors per level, D spatial dims, R restarts.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

# Base sizes per axis: 3 per axis gives 9 anchors in 2D and 27 in 3D, nnDetection's counts.
ANCHORS_PER_AXIS = 3
# Boxes used for fitting; more add little to a mean and cost time.
MAX_FIT_BOXES = 2000
# Boxes used by the gradient ascent (the coordinate search then uses MAX_FIT_BOXES).
MAX_GRADIENT_BOXES = 1000
# Random restarts of the gradient ascent; the best by exact coverage wins.
NUM_RESTARTS = 6


def centred_iou(sizes_a: Tensor, sizes_b: Tensor) -> Tensor:
    """IoU of co-centred boxes from their sizes.

    Two boxes with the same centre overlap in ``min(a_d, b_d)`` along each axis, so
    ``IoU = prod(min) / (prod(a) + prod(b) - prod(min))``.

    Args:
        sizes_a: float [..., N, D] box extents.
        sizes_b: float [..., M, D] box extents.

    Returns:
        float [..., N, M] IoU in [0, 1].
    """
    inter = torch.minimum(sizes_a[..., :, None, :], sizes_b[..., None, :, :]).prod(dim=-1)
    vol_a = sizes_a.prod(dim=-1)[..., :, None]
    vol_b = sizes_b.prod(dim=-1)[..., None, :]
    return inter / (vol_a + vol_b - inter)


def anchors_from_bases(bases: Tensor, strides: Tensor) -> Tensor:
    """Anchor sizes of every level from per-axis base sizes.

    Args:
        bases: float [..., D, m] base sizes (in units of the level stride) per axis.
        strides: float [L, D] stride of each detection level.

    Returns:
        float [..., L, A, D] with ``A = m**D``; anchor ``a`` of level ``l`` has size
        ``bases[d, i_d] * strides[l, d]`` for the ``a``-th combination ``(i_0, .., i_{D-1})``.
    """
    dim, m = bases.shape[-2:]
    combos = torch.tensor(list(itertools.product(range(m), repeat=dim)), dtype=torch.long)
    # [..., A, D]: pick base combos[a, d] on axis d
    per_anchor = torch.stack([bases[..., d, combos[:, d]] for d in range(dim)], dim=-1)
    return per_anchor[..., None, :, :] * strides[:, None, :]


def mean_best_iou(box_sizes: Tensor, anchors: Tensor) -> Tensor:
    """Mean over boxes of the best co-centred IoU with any anchor.

    Args:
        box_sizes: float [N, D].
        anchors: float [..., L, A, D] anchor sizes.

    Returns:
        float [...] the coverage (0 without boxes).
    """
    if box_sizes.shape[0] == 0:
        return torch.zeros(anchors.shape[:-3])
    flat = anchors.flatten(-3, -2)  # [..., L*A, D]
    return centred_iou(box_sizes, flat).amax(dim=-1).mean(dim=-1)


def fit_anchors(
    box_sizes: Tensor,
    strides: list[list[int]],
    per_axis: int = ANCHORS_PER_AXIS,
    seed: int = 0,
    steps: int = 100,
) -> tuple[list[list[list[float]]], float]:
    """Fit anchor sizes to training boxes.

    Args:
        box_sizes: float [N, D] box extents in voxels of the stored (network) space.
        strides: [L][D] stride of each detection level.
        per_axis: base sizes per axis (m); the level has ``m**D`` anchors.
        seed: seed for box subsampling and restarts.
        steps: gradient steps per restart.

    Returns:
        anchors: [L][A][D] anchor sizes in voxels.
        coverage: the mean best-anchor IoU of all boxes with these anchors.

    Notes:
        Gradient ascent on the log base sizes of a smooth maximum (log-sum-exp with an
        annealed temperature) over ``NUM_RESTARTS`` restarts, then a multiplicative
        coordinate search on the exact objective. Without boxes, a default of base sizes
        ``(2, 4, 8)`` per axis is returned with coverage 0.
    """
    with _one_thread():
        return _fit(box_sizes, strides, per_axis, seed, steps)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Small tensors: thread start-up costs more than it saves, and far more on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit(
    box_sizes: Tensor, strides: list[list[int]], per_axis: int, seed: int, steps: int
) -> tuple[list[list[list[float]]], float]:
    generator = torch.Generator().manual_seed(seed)
    box_sizes = box_sizes.to(torch.float64).clamp(min=1e-3)
    stride_t = torch.tensor(strides, dtype=torch.float64)
    dim = stride_t.shape[1]
    if box_sizes.shape[0] == 0:
        bases = torch.tensor([2.0, 4.0, 8.0][:per_axis], dtype=torch.float64).expand(dim, -1)
        return anchors_from_bases(bases, stride_t).tolist(), 0.0

    # a random subset, so that boxes listed case by case are not cut off by case
    order = torch.randperm(box_sizes.shape[0], generator=generator)
    fit_sizes = box_sizes[order[:MAX_FIT_BOXES]]

    log_bases = _initial_log_bases(fit_sizes, stride_t, per_axis, generator)
    grad_sizes = fit_sizes[:MAX_GRADIENT_BOXES].float()
    log_bases = _gradient_ascent(grad_sizes, stride_t.float(), log_bases.float(), steps).double()
    scores = mean_best_iou(fit_sizes, anchors_from_bases(log_bases.exp(), stride_t))
    best = log_bases[scores.argmax()]
    best = _coordinate_search(fit_sizes, stride_t, best)

    bases = best.exp().sort(dim=-1).values
    anchors = anchors_from_bases(bases, stride_t)
    coverage = float(mean_best_iou(box_sizes, anchors))
    logger.info("anchors fitted: mean best-anchor IoU %.3f over %d boxes", coverage, len(box_sizes))
    return anchors.tolist(), coverage


def _initial_log_bases(
    sizes: Tensor, strides: Tensor, m: int, generator: torch.Generator
) -> Tensor:
    """[R, D, m] starts: restart 0 spreads quantiles over the finest level, the rest random."""
    rel_fine = (sizes / strides[0]).log()  # [N, D]
    quantiles = torch.linspace(0.1, 0.9, m, dtype=torch.float64)
    first = torch.quantile(rel_fine, quantiles, dim=0).T  # [D, m]
    lo = (sizes.log().quantile(0.02, dim=0) - strides.log().amax(dim=0))[:, None]
    hi = (sizes.log().quantile(0.98, dim=0) - strides.log().amin(dim=0))[:, None]
    rand = torch.rand(NUM_RESTARTS - 1, sizes.shape[1], m, generator=generator)
    others = lo + (hi - lo).clamp(min=0.1) * rand.to(torch.float64)
    return torch.cat([first[None], others], dim=0)


def _gradient_ascent(sizes: Tensor, strides: Tensor, log_bases: Tensor, steps: int) -> Tensor:
    """Adam on a soft maximum of the IoU; ``log_bases`` is float [R, D, m]."""
    params = log_bases.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([params], lr=0.05)
    for step in range(steps):
        # anneal from a soft to a nearly hard maximum
        temperature = 0.1 * (0.05 ** (step / max(steps - 1, 1)))
        anchors = anchors_from_bases(params.exp(), strides).flatten(-3, -2)  # [R, L*A, D]
        iou = centred_iou(sizes, anchors)  # [R, N, L*A]
        soft_max = temperature * torch.logsumexp(iou / temperature, dim=-1)
        loss = -soft_max.mean(dim=-1).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return params.detach()


def _coordinate_search(sizes: Tensor, strides: Tensor, log_bases: Tensor) -> Tensor:
    """Greedy multiplicative steps per base size on the exact coverage; [D, m] in and out."""
    best = log_bases.clone()
    best_score = mean_best_iou(sizes, anchors_from_bases(best.exp(), strides))
    for delta in (0.2, 0.05, 0.01):
        for index in itertools.product(range(best.shape[0]), range(best.shape[1])):
            for sign in (1.0, -1.0):
                trial = best.clone()
                trial[index] += sign * delta
                score = mean_best_iou(sizes, anchors_from_bases(trial.exp(), strides))
                if score > best_score:
                    best, best_score = trial, score
    return best
