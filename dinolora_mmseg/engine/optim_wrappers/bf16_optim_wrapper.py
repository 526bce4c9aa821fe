from contextlib import contextmanager
from typing import Tuple

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS
from torch import nn

from ...utils.timing import matmul_rate

# bfloat16 matrix products below this fraction of the float32 rate are emulated (no
# AVX-512 BF16 or AMX): hundreds of times slower, not a trade of speed for memory.
MIN_BF16_SPEED = 0.1


def matmul_rates(size: int = 256) -> Tuple[float, float]:
    """GFLOP/s of a ``size`` x ``size`` CPU matrix product in bfloat16 and in float32."""
    return tuple(matmul_rate(torch.device('cpu'), dtype, size, repeats=3)
                 for dtype in (torch.bfloat16, torch.float32))


def check_cpu_bfloat16_speed() -> None:
    """Refuse bfloat16 autocast (``RuntimeError``, giving both rates) on a CPU whose
    bfloat16 products run below ``MIN_BF16_SPEED`` of the float32 rate."""
    bf16, fp32 = matmul_rates()
    if bf16 < MIN_BF16_SPEED * fp32:
        raise RuntimeError(
            f'bfloat16 training (--amp / BF16OptimWrapper) refused: this CPU multiplies '
            f'bfloat16 matrices at {bf16:.2g} GFLOP/s against {fp32:.3g} GFLOP/s in float32 '
            f'(measured just now, 256x256), i.e. it has no native bfloat16 (AVX-512 BF16 or '
            f'AMX), so every step would be about {fp32 / bf16:.0f}x slower. Train in float32 '
            '(without --amp, or optim_wrapper.type=OptimWrapper), or set '
            'optim_wrapper.check_bf16_speed=False to run anyway')
    if bf16 < fp32:
        print_log(f'bfloat16 matrix products run at {bf16 / fp32:.2f}x the float32 rate on '
                  'this CPU: bfloat16 autocast saves memory here, not time', logger='current')


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` whose forward passes run under bfloat16 autocast.

    MMEngine's ``AmpOptimWrapper`` refuses to run without a GPU and adds a ``GradScaler``
    even for bfloat16, which has float32's exponent range. Weights, gradients and
    optimizer state stay float32.

    Args:
        check_bf16_speed (bool): On a CPU, refuse where bfloat16 is emulated
            (:func:`check_cpu_bfloat16_speed`).
        *args, **kwargs: :class:`OptimWrapper` arguments.
    """

    def __init__(self, *args, check_bf16_speed: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        params = [p for group in self.optimizer.param_groups for p in group['params']]
        if check_bf16_speed and params and params[0].device.type == 'cpu':
            check_cpu_bfloat16_speed()

    @contextmanager
    def optim_context(self, model: nn.Module):
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device, dtype=torch.bfloat16):
            yield
