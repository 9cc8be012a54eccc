"""Learning-rate schedule: linear warm-up, then nnU-Net's polynomial decay."""

from __future__ import annotations

import torch


class WarmupPolyLR(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up from ``warmup_start * base_lr`` over ``warmup_steps``, then poly decay.

    After warm-up ``lr = base_lr * (1 - t / T)^0.9`` (t and T counted from the end of the
    warm-up), the exponent of nnU-Net (Isensee et al., 2021). The warm-up, as nnDetection
    ramps its first iterations, keeps large SGD steps from upsetting fresh detection heads.
    Stepped once per iteration.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_start: float = 0.01,
        exponent: float = 0.9,
        last_epoch: int = -1,
    ) -> None:
        self.total_steps = max(1, total_steps)
        self.warmup_steps = min(warmup_steps, self.total_steps - 1)
        self.warmup_start = warmup_start
        self.exponent = exponent
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The multiple of the base learning rate at iteration ``step``."""
        if step < self.warmup_steps:
            return self.warmup_start + (1 - self.warmup_start) * step / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        progress = min(step - self.warmup_steps, decay_steps) / decay_steps
        return (1 - progress) ** self.exponent

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
