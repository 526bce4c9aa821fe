"""prepare_launch: the device, the distributed timeout, TF32, the CPU set-up; --amp."""
import os
import subprocess
import sys
from datetime import timedelta

import pytest
import torch
from mmengine.config import Config

from dinolora_mmseg.engine import device_check, launch, precision
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


FAKE_NVIDIA_SMI = """#!/bin/sh
case "$1" in
  -L) echo 'GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-0)'
      echo 'GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-1)';;
  --query-gpu=driver_version) echo 535.104.05; echo 535.104.05;;
  *) exit 1;;
esac
"""
TOO_OLD = ('The NVIDIA driver on your system is too old (found version 12020). Please update '
           'your GPU driver')


def sync_bn_config(**settings):
    return Config(dict(model=dict(norm_cfg=dict(type='SyncBN')), **settings))


@pytest.fixture
def gpu_node_with_old_driver(monkeypatch, tmp_path):
    """A node with two GPUs and a driver too old for torch's CUDA 13.0 build."""
    (tmp_path / 'nvidia-smi').write_text(FAKE_NVIDIA_SMI)
    (tmp_path / 'nvidia-smi').chmod(0o755)
    monkeypatch.setenv('PATH', f'{tmp_path}:{os.environ["PATH"]}')
    monkeypatch.setattr(device_check.glob, 'glob', lambda pattern: ['/dev/nvidia0',
                                                                    '/dev/nvidia1'])
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,1')
    monkeypatch.delenv(device_check.ALLOW_CPU_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.version, 'cuda', '13.0')

    def init():
        raise RuntimeError(TOO_OLD)
    monkeypatch.setattr(torch.cuda, 'init', init)


def test_a_gpu_node_whose_cuda_torch_cannot_use_is_refused(gpu_node_with_old_driver):
    with pytest.raises(RuntimeError) as error:
        launch.prepare_launch(sync_bn_config(), 'none')
    message = str(error.value)
    assert message.startswith('GPUs are present (nvidia-smi lists 2 GPU(s): GPU 0: NVIDIA '
                              'A100-SXM4-80GB (UUID: GPU-0), ...; /dev/nvidia0, /dev/nvidia1 '
                              'exist; CUDA_VISIBLE_DEVICES=0,1) but torch cannot use CUDA')
    assert 'is built for CUDA 13.0; the NVIDIA driver is 535.104.05' in message
    assert f'torch says: {TOO_OLD}' in message
    assert '--device cpu or set DINOLORA_ALLOW_CPU=1' in message


@pytest.mark.parametrize('opt_in', ['--device cpu', 'DINOLORA_ALLOW_CPU=1'])
def test_the_cpu_is_used_there_when_asked_for(gpu_node_with_old_driver, monkeypatch, opt_in):
    if opt_in.startswith('DINOLORA'):
        monkeypatch.setenv(device_check.ALLOW_CPU_ENV, '1')
    cfg = launch.prepare_launch(sync_bn_config(), 'none',
                                'cpu' if opt_in == '--device cpu' else None)
    assert cfg.model.norm_cfg.type == 'BN'
    assert os.environ['CUDA_VISIBLE_DEVICES'] == ('' if opt_in == '--device cpu' else '0,1')


def test_device_cuda_without_usable_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(device_check, 'run_nvidia_smi', lambda *args: [])
    with pytest.raises(RuntimeError, match=r'GPUs are present \(--device cuda\)'):
        launch.prepare_launch(sync_bn_config(), 'none', 'cuda')


def test_a_machine_without_gpus_runs_on_the_cpu_without_a_word(monkeypatch):
    monkeypatch.setattr(device_check, 'run_nvidia_smi', lambda *args: [])
    monkeypatch.setattr(device_check.glob, 'glob', lambda pattern: [])
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert launch.prepare_launch(sync_bn_config(), 'none').model.norm_cfg.type == 'BN'


@pytest.fixture
def cuda(monkeypatch):
    """A machine where torch can use CUDA; TF32 flags restored afterwards."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(precision, 'print_log', lambda *args, **kwargs: None)
    monkeypatch.setattr(launch, 'init_dist', lambda launcher, **kwargs: None)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_on_cuda_tf32_is_on_and_the_nccl_timeout_set(cuda, monkeypatch):
    monkeypatch.delenv(launch.DIST_TIMEOUT_ENV, raising=False)
    cfg = launch.prepare_launch(sync_bn_config(), 'pytorch')
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert cfg.model.norm_cfg.type == 'SyncBN' and 'model_wrapper_cfg' not in cfg
    assert cfg.env_cfg.dist_cfg == dict(backend='nccl', timeout=1800)


def test_tf32_can_be_turned_off_and_a_configs_timeout_is_kept(cuda, monkeypatch):
    monkeypatch.setenv(launch.DIST_TIMEOUT_ENV, '60')
    cfg = launch.prepare_launch(sync_bn_config(env_cfg=dict(
        allow_tf32=False, dist_cfg=dict(backend='nccl', timeout=7200))), 'pytorch')
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert cfg.env_cfg.dist_cfg.timeout == 7200
    assert launch.prepare_launch(sync_bn_config(), 'slurm').env_cfg.dist_cfg.timeout == 60


def test_a_timeout_that_is_not_a_number_of_seconds_is_refused(monkeypatch):
    monkeypatch.setenv(launch.DIST_TIMEOUT_ENV, '10m')
    with pytest.raises(ValueError, match='DINOLORA_DIST_TIMEOUT=10m: expected a positive'):
        launch.dist_timeout()


def amp(monkeypatch, cuda_available, bf16=False, **optim_wrapper):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda_available)
    monkeypatch.setattr(precision, 'print_log', lambda *args, **kwargs: None)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported',
                        lambda including_emulation=True: bf16 or including_emulation)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'Tesla V100' if not bf16
                        else 'NVIDIA H100')
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda *a: (7, 0) if not bf16
                        else (9, 0))
    wrapper = dict(optimizer=dict(type='AdamW', lr=1e-4), **optim_wrapper)
    return wrapper, precision.use_amp(wrapper)


def test_amp_on_a_gpu_with_bfloat16_is_bfloat16_without_a_loss_scaler(monkeypatch):
    wrapper, message = amp(monkeypatch, True, bf16=True)
    assert wrapper == dict(type='BF16OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    assert message == ('--amp: NVIDIA H100 (compute capability 9.0) has bfloat16: bfloat16 '
                       'autocast without loss scaling (BF16OptimWrapper)')


def test_amp_on_a_gpu_without_bfloat16_is_float16_with_dynamic_loss_scaling(monkeypatch):
    """is_bf16_supported() says True on a V100 (emulated); only the native answer counts."""
    wrapper, message = amp(monkeypatch, True, bf16=False)
    assert wrapper == dict(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic',
                           optimizer=dict(type='AdamW', lr=1e-4))
    assert 'Tesla V100 (compute capability 7.0) has no bfloat16' in message


def test_amp_on_the_cpu_and_with_a_config_that_has_it(monkeypatch):
    assert amp(monkeypatch, False)[0]['type'] == 'BF16OptimWrapper'
    wrapper, message = amp(monkeypatch, True, type='AmpOptimWrapper', dtype='float16')
    assert wrapper['dtype'] == 'float16' and 'already trains with AmpOptimWrapper' in message
def test_with_cuda_a_launched_process_joins_the_group_as_the_runner_would(cuda, monkeypatch):
    calls = []
    monkeypatch.setattr(launch.dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(launch, 'init_dist', lambda launcher, **kw: calls.append((launcher, kw)))
    cfg = Config(dict(model=dict(norm_cfg=dict(type='SyncBN')),
                      env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60))))
    launch.prepare_launch(cfg, 'pytorch')
    assert calls == [('pytorch', dict(backend='nccl', timeout=timedelta(seconds=60)))]
    assert cfg.model.norm_cfg.type == 'SyncBN' and 'model_wrapper_cfg' not in cfg
    launch.prepare_launch(Config(dict(model=dict())), 'none')
    assert len(calls) == 1


