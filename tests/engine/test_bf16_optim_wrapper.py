import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn

from dinolora_mmseg.engine import BF16OptimWrapper
from dinolora_mmseg.engine.optim_wrappers import bf16_optim_wrapper


def test_forward_runs_in_bfloat16_and_weights_stay_float32():
    init_default_scope('mmseg')  # as in a run: the wrapper is in MMSeg's registry
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    wrapper = build_optim_wrapper(model, dict(type='BF16OptimWrapper', check_bf16_speed=False,
                                              optimizer=dict(type='SGD', lr=0.1)))
    assert isinstance(wrapper, BF16OptimWrapper)
    before = model[0].weight.clone()
    with wrapper.optim_context(model):
        out = model(torch.randn(4, 8))
    assert out.dtype == torch.bfloat16
    wrapper.update_params(out.float().pow(2).mean())
    assert model[0].weight.dtype == torch.float32
    assert not torch.equal(model[0].weight, before)


def build(model, **kwargs):
    init_default_scope('mmseg')
    return build_optim_wrapper(model, dict(type='BF16OptimWrapper',
                                           optimizer=dict(type='SGD', lr=0.1), **kwargs))


def test_refused_where_bfloat16_is_emulated(monkeypatch):
    """The rates of a CPU without AVX-512 BF16/AMX (measured on an AMD EPYC, AVX2 only)."""
    monkeypatch.setattr(bf16_optim_wrapper, 'matmul_rates', lambda: (0.3, 100.0))
    with pytest.raises(RuntimeError, match=r'0\.3 GFLOP/s against 100 GFLOP/s.*about 333x'):
        build(nn.Linear(4, 4))
    assert isinstance(build(nn.Linear(4, 4), check_bf16_speed=False), BF16OptimWrapper)


def test_accepted_where_bfloat16_is_native_even_if_slower(monkeypatch):
    monkeypatch.setattr(bf16_optim_wrapper, 'matmul_rates', lambda: (160.0, 300.0))
    assert isinstance(build(nn.Linear(4, 4)), BF16OptimWrapper)


def test_matmul_rates_are_measured():
    bf16, fp32 = bf16_optim_wrapper.matmul_rates(64)
    assert 0 < bf16 < float('inf') and 0 < fp32 < float('inf')
