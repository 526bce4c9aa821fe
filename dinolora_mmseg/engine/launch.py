"""Settings that let MMEngine run multi-process jobs on machines without CUDA."""
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log


def _replace_sync_bn(node):
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        for value in node.values():
            _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _replace_sync_bn(value)


def prepare_launch(cfg: Config, launcher: str) -> Config:
    """Adapt ``cfg`` to the machine before the Runner is built.

    On a machine without CUDA, ``SyncBN`` becomes ``BN`` (SyncBN needs CUDA) and, for
    ``--launcher pytorch`` (torchrun), the process group is created here with the gloo
    backend and the model is wrapped without ``device_ids``: MMEngine's own
    ``init_dist`` calls ``torch.cuda.set_device`` and cannot do this. With CUDA the
    config is left as it is.

    Args:
        cfg (Config): The loaded config; modified in place and returned.
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
    """
    cfg.launcher = launcher
    if torch.cuda.is_available():
        return cfg
    _replace_sync_bn(cfg.model)
    if launcher == 'none':
        return cfg
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs CUDA; without it use '
                         '--launcher pytorch (torchrun, as dist_train.sh/dist_test.sh do)')
    dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg', {})
    timeout = dist_cfg.get('timeout', int(os.environ.get('DINOLORA_DIST_TIMEOUT', 600)))
    if not dist.is_initialized():
        dist.init_process_group('gloo', timeout=timedelta(seconds=timeout))
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    print_log(f'No CUDA: rank {dist.get_rank()} of {dist.get_world_size()} runs on the '
              'CPU with the gloo backend; SyncBN replaced by BN', logger='current')
    return cfg
