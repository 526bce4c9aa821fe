"""What the Runner-based tools share: their common options, and the machine's settings
applied to the config before the Runner is built."""
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
# Seconds a collective may wait, where the config sets none: loading a big model can keep a
# rank from the first collective for longer than torch's default 10 minutes.
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
    """Adapt ``cfg`` to the machine before the Runner is built: the device chosen, an
    ``env_cfg.dist_cfg.timeout`` where none is set; on CUDA, TF32 set and a launched process
    in its process group, as the Runner would, so that the data can be checked on one rank.

    Args:
        cfg (Config): The loaded config; modified in place and returned.
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        device (str, optional): ``--device``: ``'cuda'``, ``'cpu'`` or None (choose).
    """
    cfg.launcher = launcher
    on_cuda = select_device(device) == 'cuda'
    if launcher != 'none':
        cfg.env_cfg = cfg.get('env_cfg') or dict()
        cfg.env_cfg.dist_cfg = cfg.env_cfg.get('dist_cfg') or dict(backend='nccl')  # as Runner
        if cfg.env_cfg.dist_cfg.get('timeout') is None:
            cfg.env_cfg.dist_cfg.timeout = dist_timeout()
    if on_cuda:
        set_tf32(cfg)
        if launcher != 'none' and not dist.is_initialized():
            dist_cfg = cfg.env_cfg.dist_cfg
            init_dist(launcher, **dict(dist_cfg, timeout=timedelta(seconds=dist_cfg.timeout)))
        return cfg
    return prepare_cpu_run(cfg, launcher)
