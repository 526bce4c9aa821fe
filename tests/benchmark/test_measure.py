"""The benchmark's measurements on their own: FLOPs and CPU peak memory."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dinolora_mmseg.benchmark import measure
from tests.helpers import ROOT


def test_flops_of_a_matmul_and_its_backward():
    a = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(16, 4)
    assert measure.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    assert measure.count_flops(lambda: (a @ b).sum().backward()) == 2 * (2 * 8 * 16 * 4)


@pytest.mark.parametrize('groups', [1, 4])
@pytest.mark.parametrize('transposed', [False, True])
def test_a_convolution_backward_costs_twice_its_forward(groups, transposed):
    """Input and weight gradients each cost the forward's multiplications, also for a
    grouped (depthwise) convolution, which torch's own formula counts 4x too high here."""
    conv = (torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d)(
        8, 8, 3, padding=1, groups=groups, bias=False)
    x = torch.randn(2, 8, 6, 5, requires_grad=True)
    forward = 2 * 2 * 6 * 5 * 8 * (8 // groups) * 3 * 3
    assert measure.count_flops(lambda: conv(x)) == forward
    assert measure.count_flops(lambda: conv(x).sum().backward()) == 3 * forward


def test_cpu_attention_is_counted_as_torch_counts_gpu_attention():
    """torch's formula: 4 * B * H * N * N * d forward (two products of N x N x d)."""
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    assert measure.count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == (
        4 * 2 * 3 * 10 * 10 * 8)


def test_proc_status_fields():
    assert measure.proc_status_bytes('VmRSS') > 0
    with pytest.raises(KeyError, match='NoSuchField'):
        measure.proc_status_bytes('NoSuchField')


FREED_BLOCK = """
import torch
from dinolora_mmseg.benchmark import measure
for _ in range(3):  # glibc's dynamic threshold would now keep 16 MiB blocks in the heap
    blocks = [torch.ones(2**22) for _ in range(4)]
    del blocks
measure.trim_freed_memory()
start = measure.reset_peak_rss()
tensor = torch.ones(2**22)
del tensor
print((measure.proc_status_bytes('VmHWM') - start) / 2**20,
      (measure.proc_status_bytes('VmRSS') - start) / 2**20)
"""


@pytest.mark.parametrize('memory_child', [True, False])
def test_cpu_peak_memory_follows_live_tensors(memory_child):
    """In the memory child's environment, a new 16 MiB tensor shows in the peak RSS and
    leaves the RSS when freed, whatever blocks were freed before. In the default one the
    heap reuses freed blocks for it, resident (the peak misses it) or trimmed (it stays
    resident after it is freed)."""
    env = dict(os.environ, **measure.MEMORY_CHILD_ENV) if memory_child else None
    for _ in range(3):  # the heap's layout varies from run to run
        result = subprocess.run([sys.executable, '-c', FREED_BLOCK], cwd=ROOT, env=env,
                                capture_output=True, text=True, check=True)
        peak, after = map(float, result.stdout.split())
        assert (15 < peak < 17 and after < 1) == memory_child, (peak, after)
