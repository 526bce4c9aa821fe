"""What the Runner-based tools share: their common options, and the machine's settings
applied to the config before the Runner is built (device, distributed timeout, TF32,
the CPU set-up)."""
import argparse
import os
from datetime import timedelta
from typing import Optional

import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.dist import init_dist

from .cpu_distributed import prepare_cpu_run
from .device_check import select_device
from .precision import set_tf32

DIST_TIMEOUT_ENV = 'DINOLORA_DIST_TIMEOUT'
# Seconds a collective may wait, where the config sets none. Loading a big model and its
# pretrained file can keep one rank from the first collective for longer than the
# 10 minutes torch allows NCCL and gloo by default.
DEFAULT_DIST_TIMEOUT = 1800


class LocalRankAction(argparse.Action):
    """``--local_rank N`` of ``torch.distributed.launch``, passed on as ``LOCAL_RANK``
    where the launcher did not set it (MMSeg's tools do the same)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        os.environ.setdefault('LOCAL_RANK', str(values))


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add MMSeg's ``--work-dir``, ``--cfg-options``, ``--launcher``, ``--local_rank``, and
    ``--device``."""
    parser.add_argument('--work-dir', help='the dir to save logs, models and results')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        action=LocalRankAction)
    parser.add_argument('--device', choices=['cuda', 'cpu'],
                        help='default: CUDA where torch can use it; where GPUs are present '
                        'but CUDA is unusable the run is refused unless --device cpu')


def dist_timeout() -> int:
    """Seconds for ``env_cfg.dist_cfg.timeout`` where the config sets none:
    ``DINOLORA_DIST_TIMEOUT``, else :data:`DEFAULT_DIST_TIMEOUT`."""
    value = os.environ.get(DIST_TIMEOUT_ENV, str(DEFAULT_DIST_TIMEOUT))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f'{DIST_TIMEOUT_ENV}={value}: expected a positive number of seconds')
    return int(value)


def prepare_launch(cfg: Config, launcher: str, device: Optional[str] = None) -> Config:
    """Adapt ``cfg`` to the machine before the Runner is built.

    The device is chosen (:func:`~.device_check.select_device`: a GPU machine whose
    CUDA torch cannot use is refused, not run on the CPU without a word). A
    multi-process run gets ``env_cfg.dist_cfg.timeout`` (:func:`dist_timeout`) unless
    the config sets one. On CUDA, TF32 is set (:func:`~.precision.set_tf32`); on the
    CPU, SyncBN becomes BN and torchrun runs on gloo
    (:func:`~.cpu_distributed.prepare_cpu_run`).
    On CUDA a launched process also joins its process group here, as the Runner would
    (``mmengine.dist.init_dist`` with ``env_cfg.dist_cfg``; the Runner then skips it), so
    that the data can be checked on one rank before the Runner is built.

    Args:
        cfg (Config): The loaded config; modified in place and returned.
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        device (str, optional): ``--device``: ``'cuda'``, ``'cpu'`` or None (choose).
    """
    cfg.launcher = launcher
    on_cuda = select_device(device) == 'cuda'
    if launcher != 'none':
        if cfg.get('env_cfg') is None:
            cfg.env_cfg = dict()
        if cfg.env_cfg.get('dist_cfg') is None:
            cfg.env_cfg.dist_cfg = dict(backend='nccl')  # the Runner's default
        if cfg.env_cfg.dist_cfg.get('timeout') is None:
            cfg.env_cfg.dist_cfg.timeout = dist_timeout()
    if on_cuda:
        set_tf32(cfg)
        if launcher != 'none' and not dist.is_initialized():
            dist_cfg = dict(cfg.env_cfg.dist_cfg)
            dist_cfg['timeout'] = timedelta(seconds=dist_cfg['timeout'])
            init_dist(launcher, **dist_cfg)
        return cfg
    return prepare_cpu_run(cfg, launcher)
