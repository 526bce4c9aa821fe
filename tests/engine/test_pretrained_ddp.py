"""PretrainedWeightsDDP in a 2-process gloo group on loopback."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, TINY, free_port, official_state_dict

WORKER = """
import json, sys
import torch
import torch.distributed as dist
from types import SimpleNamespace
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
import dinolora_mmseg  # noqa: F401 registers the wrapper
from dinolora_mmseg.engine.cpu_distributed import destroy_process_group
from dinolora_mmseg.models import DINOv2

pretrained = sys.argv[1] or None
dist.init_process_group('gloo')
rank = dist.get_rank()
torch.manual_seed(rank)  # the adapters start different on each rank
model = DINOv2(arch=%(arch)r, pretrained=pretrained, lora=dict(rank=2, targets=('q', 'v')))
frozen, trainable = 'blocks.0.attn.qkv.weight', 'blocks.0.attn.qkv.lora_A.q'
with torch.no_grad():
    model.get_parameter(frozen).add_(rank)  # a difference broadcasting would remove
    model.get_parameter('blocks.0.attn.qkv.lora_B.q').normal_()
# wrapped as the Runner wraps it, with the wrapper the configs name
wrapper_cfg = Config.fromfile('configs/dinov2_lora_voc.py').model_wrapper_cfg
DefaultScope.get_instance('test', scope_name='mmseg')
runner = SimpleNamespace(distributed=True, cfg=Config(), logger=MMLogger.get_current_instance())
wrapped = Runner.wrap_model(runner, dict(wrapper_cfg, device_ids=None), model)
assert type(wrapped).__name__ == 'PretrainedWeightsDDP'
def gathered(name):
    value = model.get_parameter(name).detach().float()
    values = [torch.empty_like(value) for _ in range(2)]
    dist.all_gather(values, value)
    return values
report = dict(frozen_equal=torch.equal(*gathered(frozen)),
              trainable_equal_after_wrapping=torch.equal(*gathered(trainable)))
optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
wrapped(torch.randn(1, 3, 28, 28))[0].square().mean().backward()  # other data per rank
before = model.get_parameter(trainable).detach().clone()
optimizer.step()
report.update(trainable_equal_after_step=torch.equal(*gathered(trainable)),
              trainable_changed=not torch.equal(before, model.get_parameter(trainable)))
if rank == 0:
    print(json.dumps(report), flush=True)
dist.barrier()
del wrapped
destroy_process_group()  # and free what refers to the group, or gloo may abort at exit
"""


def run_two_ranks(tmp_path, pretrained):
    script = tmp_path / 'worker.py'
    script.write_text(WORKER % dict(arch=TINY))
    port = str(free_port())
    workers = [subprocess.Popen(
        [sys.executable, str(script), pretrained], cwd=ROOT, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=ROOT, RANK=str(rank), LOCAL_RANK=str(rank),
                 WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT=port,
                 OMP_NUM_THREADS='1')) for rank in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    return json.loads(outputs[0].strip().splitlines()[-1])


@pytest.mark.parametrize('from_file', [True, False])
def test_pretrained_weights_are_not_broadcast_and_the_rest_is(tmp_path, from_file):
    pretrained = ''
    if from_file:
        torch.save(official_state_dict(64, 3), tmp_path / 'w.pth')
        pretrained = str(tmp_path / 'w.pth')
    report = run_two_ranks(tmp_path, pretrained)
    # from the file: rank 1's perturbed copy was not overwritten (no broadcast);
    # random init (the only copy of those weights) is broadcast from rank 0
    assert report['frozen_equal'] is (not from_file)
    assert report['trainable_equal_after_wrapping'] is True
    assert report['trainable_equal_after_step'] is report['trainable_changed'] is True
