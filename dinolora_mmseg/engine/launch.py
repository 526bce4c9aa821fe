"""What the command-line tools share: their common options, loading the config as
MMSeg's tools do, and the settings that let MMEngine run multi-process jobs on
machines without CUDA."""
import argparse
import atexit
import os
import os.path as osp
from datetime import timedelta

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add MMSeg's ``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--local_rank``."""
    parser.add_argument('--work-dir', help='the dir to save logs, models and results')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args: argparse.Namespace) -> Config:
    """``args.config`` with ``--cfg-options`` applied and the work dir set as MMSeg's tools
    do (``--work-dir``, else the config's, else ``./work_dirs/<config name>``). A config
    without ``default_scope`` gets ``'mmseg'``, as MMSeg's ``init_model`` assumes, so its
    types need no ``mmseg.`` prefix."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('default_scope') is None:
        cfg.default_scope = 'mmseg'
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def _replace_sync_bn(node):
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        for value in node.values():
            _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _replace_sync_bn(value)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def prepare_launch(cfg: Config, launcher: str) -> Config:
    """Adapt ``cfg`` to the machine before the Runner is built.

    On a machine without CUDA, ``SyncBN`` becomes ``BN`` (SyncBN needs CUDA) and, for
    ``--launcher pytorch`` (torchrun), the process group is created here with the gloo
    backend and the model is wrapped without ``device_ids``: MMEngine's own
    ``init_dist`` calls ``torch.cuda.set_device`` and cannot do this. That group is
    destroyed at exit while the interpreter is still whole: left to the interpreter's
    teardown, gloo's threads can abort the finished process ("terminate called without
    an active exception"). With CUDA the config is left as it is.

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
        atexit.register(_destroy_process_group)
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    print_log(f'No CUDA: rank {dist.get_rank()} of {dist.get_world_size()} runs on the '
              'CPU with the gloo backend; SyncBN replaced by BN', logger='current')
    return cfg
