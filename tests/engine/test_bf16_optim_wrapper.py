import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn

from dinolora_mmseg.engine import BF16OptimWrapper


def test_forward_runs_in_bfloat16_and_weights_stay_float32():
    init_default_scope('mmseg')  # as in a run: the wrapper is in MMSeg's registry
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    wrapper = build_optim_wrapper(model, dict(type='BF16OptimWrapper',
                                              optimizer=dict(type='SGD', lr=0.1)))
    assert isinstance(wrapper, BF16OptimWrapper)
    before = model[0].weight.clone()
    with wrapper.optim_context(model):
        out = model(torch.randn(4, 8))
    assert out.dtype == torch.bfloat16
    wrapper.update_params(out.float().pow(2).mean())
    assert model[0].weight.dtype == torch.float32
    assert not torch.equal(model[0].weight, before)
