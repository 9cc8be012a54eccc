"""DistributedDataParallel set-up for runs launched with ``torchrun``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment.

    Without ``WORLD_SIZE > 1`` this does nothing. NCCL is used on CUDA, gloo on the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("rank %d of %d joined (%s)", info.rank, world_size, backend)
    return info


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def average(value: float, info: DistInfo, device: torch.device | None = None) -> float:
    """Mean of a scalar over all ranks (the value itself when not distributed)."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size


def check_in_sync(module: torch.nn.Module, info: DistInfo, device: torch.device) -> None:
    """Raise when the parameters of the ranks differ (DDP must keep them identical).

    Compares one float64 checksum per rank; a cheap guard against a rank that trained on its
    own, e.g. after a change that bypasses the DDP wrapper.
    """
    if not info.enabled:
        return
    with torch.no_grad():
        checksum = sum(p.double().sum() for p in module.parameters()).reshape(1).to(device)
    sums = [torch.zeros_like(checksum) for _ in range(info.world_size)]
    dist.all_gather(sums, checksum)
    values = [float(s.item()) for s in sums]
    if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
        raise RuntimeError(f"model parameters differ between ranks after training: {values}")
    logger.info("parameters identical on all %d ranks", info.world_size)
