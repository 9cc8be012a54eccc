import pytest
import torch

from nndet.training.schedule import WarmupPolyLR


def _scheduler(total: int, warmup: int) -> tuple[torch.optim.Optimizer, WarmupPolyLR]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    return optimizer, WarmupPolyLR(optimizer, total, warmup_steps=warmup, warmup_start=0.1)


def test_warmup_rises_linearly_to_the_base_rate():
    optimizer, scheduler = _scheduler(total=100, warmup=10)
    rates = []
    for _ in range(11):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.001)
    assert rates[5] == pytest.approx(0.01 * (0.1 + 0.9 * 5 / 10))
    assert all(a < b for a, b in zip(rates[:10], rates[1:11], strict=True))


def test_poly_decay_follows_exponent_and_reaches_zero():
    optimizer, scheduler = _scheduler(total=100, warmup=0)
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**0.9)
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_state_dict_round_trip_continues_the_schedule():
    optimizer, scheduler = _scheduler(total=100, warmup=10)
    for _ in range(30):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    optimizer2, scheduler2 = _scheduler(total=100, warmup=10)
    scheduler2.load_state_dict(state)
    optimizer2.step()
    scheduler2.step()
    optimizer.step()
    scheduler.step()
    assert scheduler2.get_last_lr() == pytest.approx(scheduler.get_last_lr())
