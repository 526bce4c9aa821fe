"""Runs on machines without CUDA: BN for SyncBN, and torchrun processes on the gloo backend
(MMEngine's ``init_dist`` calls ``torch.cuda.set_device`` and wraps with ``device_ids``)."""
import atexit
import gc
from datetime import timedelta

import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log


def replace_sync_bn(node) -> None:
    """Turn every ``type='SyncBN'`` in a config tree into ``'BN'`` (SyncBN needs CUDA)."""
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        node = list(node.values())
    for value in node if isinstance(node, (list, tuple)) else ():
        replace_sync_bn(value)


def destroy_process_group() -> None:
    """Destroy the process group, then free what still refers to it (the runner and the
    DDP wrapper sit in reference cycles): left to the interpreter's teardown, gloo's
    destructor can abort the finished process ("terminate called without an active
    exception", about one 2-process run in three)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


def prepare_cpu_run(cfg: Config, launcher: str) -> Config:
    """Adapt ``cfg`` to a run on the CPU, in place: ``SyncBN`` becomes ``BN``; for
    ``--launcher pytorch`` (torchrun) the gloo process group is created (the Runner then
    skips its own) and destroyed at exit, and the model is wrapped without ``device_ids``.

    Args:
        cfg (Config): The config, ``env_cfg.dist_cfg.timeout`` set by ``prepare_launch``.
        launcher (str): ``'none'`` or ``'pytorch'`` (``'slurm'`` and ``'mpi'`` need CUDA).
    """
    replace_sync_bn(cfg.model)
    if launcher == 'none':
        return cfg
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs CUDA; without it use '
                         '--launcher pytorch (torchrun, as dist_train.sh/dist_test.sh do)')
    dist_cfg = cfg['env_cfg']['dist_cfg']
    if not dist.is_initialized():
        dist.init_process_group('gloo', timeout=timedelta(seconds=dist_cfg['timeout']))
        atexit.register(destroy_process_group)
    dist_cfg['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    print_log(f'No CUDA: rank {dist.get_rank()} of {dist.get_world_size()} runs on the '
              'CPU with the gloo backend; SyncBN replaced by BN', logger='current')
    return cfg
