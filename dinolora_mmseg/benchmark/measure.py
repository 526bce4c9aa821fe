"""Measuring a step: its FLOPs and the peak memory of a CPU process (its time and the
machine's matrix-multiply rate: :mod:`dinolora_mmseg.utils.timing`)."""
import ctypes
from typing import Callable

import torch
from torch.utils.flop_counter import (FlopCounterMode, conv_flop_count,
                                      sdpa_backward_flop_count, sdpa_flop_count)

# glibc maps blocks of 128 KiB and more on their own and unmaps them when freed, so that
# the RSS sees freed memory (docs/performance.md). A process measuring peak memory runs so.
MEMORY_CHILD_ENV = dict(MALLOC_MMAP_THRESHOLD_=str(128 * 1024))


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding,
                         _dilation, transposed, _output_padding, _groups, output_mask,
                         out_shape=None, **kwargs) -> int:
    """Each gradient (input, weight) costs the multiplications of the forward pass."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` as ``FlopCounterMode`` counts them, with the CPU
    attention kernel counted by torch's formulas for its GPU kernels, and the backward
    pass of a grouped convolution as that of the others (torch 2.14's formula counts
    its weight gradient ``groups`` times over: 384x for EoMT's depthwise convolutions)."""
    aten = torch.ops.aten
    formulas = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
                aten._scaled_dot_product_flash_attention_for_cpu_backward:
                _cpu_sdpa_backward_flops,
                aten.convolution_backward: _conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=formulas) as counter:
        step()
    return counter.get_total_flops()


def proc_status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in bytes."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(f'{field} is not in /proc/self/status')


def reset_peak_rss() -> int:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS, which is returned
    (``ru_maxrss`` is never reset, and inherited by a child of ``subprocess``); OSError
    where ``/proc/self/clear_refs`` is not writable."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError as error:
        raise OSError('Peak memory on the CPU needs Linux /proc/self/clear_refs '
                      f'({error})') from error
    return proc_status_bytes('VmRSS')


def trim_freed_memory() -> None:
    """Return the C heap's free memory to the system (glibc ``malloc_trim``; else
    OSError)."""
    try:
        malloc_trim = ctypes.CDLL('libc.so.6').malloc_trim
    except (OSError, AttributeError) as error:
        raise OSError(f'Peak memory on the CPU needs glibc ({error})') from error
    malloc_trim(0)


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` ('unknown' where there is none)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown'
