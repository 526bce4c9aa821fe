"""load_config, and prepare_launch on a machine without CUDA (the CI machines have none)."""
import argparse
import os
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from dinolora_mmseg.engine import launch
from tests.helpers import ROOT, free_port

EXIT_CHECK = """
import atexit
import gc
import weakref
import torch
import torch.distributed as dist
from mmengine.config import Config
from torch.nn.parallel import DistributedDataParallel
from dinolora_mmseg.engine.launch import prepare_launch
gc.disable()  # cyclic garbage is then only freed when someone collects it
# Registered first, so it runs after the handlers prepare_launch registers.
atexit.register(lambda: print('initialized at exit:', dist.is_initialized(),
                              'wrapper alive:', wrapper() is not None, flush=True))
cfg = prepare_launch(Config(dict(model=dict(norm_cfg=dict(type='SyncBN')))), 'pytorch')
print(cfg.model.norm_cfg.type, cfg.model_wrapper_cfg.device_ids, dist.get_backend(), flush=True)
runner = dict(model=DistributedDataParallel(torch.nn.Linear(2, 2)))
runner['self'] = runner  # a reference cycle, as MMEngine's runner sits in
wrapper = weakref.ref(runner['model'])
del runner
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU path of prepare_launch')
def test_gloo_group_is_created_and_destroyed_before_the_interpreter_ends():
    env = dict(os.environ, RANK='0', LOCAL_RANK='0', WORLD_SIZE='1',
               MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()))
    result = subprocess.run([sys.executable, '-c', EXIT_CHECK], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert 'BN None gloo' in lines
    # The DDP wrapper, which holds the group, was freed with the group, not left to the
    # interpreter's teardown (where gloo can abort the process).
    assert lines[-1] == 'initialized at exit: False wrapper alive: False'


@pytest.fixture
def logged(monkeypatch):
    messages = []
    monkeypatch.setattr(launch, 'print_log', lambda msg, **kwargs: messages.append(msg))
    return messages


def load(options):
    args = argparse.Namespace(config=os.path.join(ROOT, 'configs/dinov2_lora_voc.py'),
                              cfg_options=options, work_dir=None, local_rank=0)
    return launch.load_config(args)


def test_options_on_plain_variables_are_named_with_the_fields_to_set(logged):
    cfg = load({'max_iters': 2})
    assert cfg.train_cfg.max_iters == 20000  # mmengine ignores it: hence the warning
    assert len(logged) == 1
    assert '--cfg-options max_iters=2 has no effect' in logged[0]
    assert 'train_cfg.max_iters, param_scheduler.1.end' in logged[0]
    load({'crop_size': (28, 28)})
    assert 'train_dataloader.dataset.pipeline.4.crop_size' in logged[1]


def test_options_on_runner_fields_are_not_warned_about(logged):
    cfg = load({'train_cfg.max_iters': 2, 'model.backbone.arch': 'small', 'work_dir': 'w'})
    assert cfg.train_cfg.max_iters == 2 and not logged


@pytest.mark.parametrize('settings, scope', [('', 'mmseg'), ("default_scope = 'mmpretrain'\n",
                                                             'mmpretrain')])
def test_config_without_default_scope_gets_mmseg(tmp_path, settings, scope):
    config = tmp_path / 'from_scratch.py'
    config.write_text(settings + "model = dict(type='EncoderDecoder')\n")
    args = argparse.Namespace(config=str(config), cfg_options=None, work_dir=None,
                              local_rank=0)
    assert launch.load_config(args).default_scope == scope


def test_with_cuda_a_launched_process_joins_the_group_as_the_runner_would(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(launch.dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(launch, 'init_dist', lambda launcher, **kw: calls.append((launcher, kw)))
    cfg = Config(dict(model=dict(norm_cfg=dict(type='SyncBN')),
                      env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60))))
    launch.prepare_launch(cfg, 'pytorch')
    assert calls == [('pytorch', dict(backend='nccl', timeout=60))]
    assert cfg.model.norm_cfg.type == 'SyncBN' and 'model_wrapper_cfg' not in cfg
    launch.prepare_launch(Config(dict(model=dict())), 'none')
    assert len(calls) == 1
