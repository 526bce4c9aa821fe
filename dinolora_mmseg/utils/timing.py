"""Timing work on a device (for the benchmark and ``BF16OptimWrapper``'s speed check)."""
import time
from typing import Callable, List

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], iters: int, warmup: int,
               device: torch.device) -> List[float]:
    """Seconds of each of ``iters`` calls of ``step`` after ``warmup`` untimed ones, with
    ``device`` synchronised around each timed call."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """GFLOP/s of a ``size`` x ``size`` matrix product of ``dtype`` on ``device``: the
    fastest of ``repeats`` after one warm-up (the machine's rate is a peak)."""
    generator = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(size, size, device=device, generator=generator).to(dtype)
            for _ in range(2))
    times = time_steps(lambda: a @ b, repeats, 1, device)
    return 2 * size**3 / min(times) / 1e9
