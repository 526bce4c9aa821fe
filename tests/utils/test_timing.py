"""Step times and the matrix-multiply rate (dinolora_mmseg.utils.timing)."""
import pytest
import torch

from dinolora_mmseg.utils import timing

CPU = torch.device('cpu')


def test_time_steps_times_the_steps_after_the_warmup():
    calls = []
    times = timing.time_steps(lambda: calls.append(1), iters=3, warmup=2, device=CPU)
    assert len(times) == 3 and len(calls) == 5 and all(t >= 0 for t in times)


def test_matmul_rate_counts_two_flops_per_multiply_add(monkeypatch):
    monkeypatch.setattr(timing, 'time_steps', lambda step, iters, warmup, device: [0.5, 0.25])
    assert timing.matmul_rate(CPU, torch.float32, 1000) == pytest.approx(2 * 1000**3 / 0.25 / 1e9)
