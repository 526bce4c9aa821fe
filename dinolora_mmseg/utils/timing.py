"""Timing work on a device: synchronised step times and the matrix-multiply rate.

Shared by the benchmark and by ``BF16OptimWrapper``'s check of the CPU's bfloat16 speed.
"""
import time
from typing import Callable, List

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], iters: int, warmup: int,
               device: torch.device) -> List[float]:
    """Seconds of each of ``iters`` calls of ``step`` after ``warmup`` untimed ones.

    Args:
        step (Callable): The work to time.
        iters (int): Timed calls.
        warmup (int): Untimed calls first.
        device (torch.device): Synchronised around each timed call.
    """
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
    """GFLOP/s of a ``size`` x ``size`` matrix product of ``dtype`` (fastest of ``repeats``
    after one warm-up): the machine's rate is a peak, so the fastest is its best estimate.

    Args:
        device (torch.device): Where to multiply.
        dtype (torch.dtype): Element type.
        size (int): Side of the square matrices.
        repeats (int): Timed products.
    """
    generator = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(size, size, device=device, generator=generator).to(dtype)
            for _ in range(2))
    times = time_steps(lambda: a @ b, repeats, 1, device)
    return 2 * size**3 / min(times) / 1e9
