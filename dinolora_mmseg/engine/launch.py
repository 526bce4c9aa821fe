"""What the command-line tools share: their common options, loading the config as
MMSeg's tools do, and the settings that let MMEngine run multi-process jobs on
machines without CUDA."""
import argparse
import atexit
import gc
import logging
import os
import os.path as osp
from datetime import timedelta
from typing import List

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.dist import init_dist
from mmengine.logging import print_log

# Top-level config keys that mmengine's Runner (and MMSeg's tools) read; any other
# top-level name is a plain variable of the config file.
RUNNER_KEYS = frozenset((
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg',
    'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler',
    'val_evaluator', 'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor',
    'load_from', 'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name', 'model_wrapper_cfg', 'compile',
    'custom_imports', 'runner_type', 'tta_model', 'tta_pipeline', 'cfg'))


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add MMSeg's ``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--local_rank``."""
    parser.add_argument('--work-dir', help='the dir to save logs, models and results')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def fields_holding(node, value, path: str = '') -> List[str]:
    """Dotted paths (list items by index) of the entries of ``node`` equal to ``value``."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)) and node != value:
        items = enumerate(node)
    else:
        return [path] if path and type(node) is type(value) and node == value else []
    return [found for key, child in items
            for found in fields_holding(child, value, f'{path}.{key}' if path else str(key))]


def warn_ineffective_options(cfg: Config, options: dict) -> None:
    """Warn about ``--cfg-options`` that set a plain variable of the config file.

    A top-level name such as ``max_iters`` or ``crop_size`` is read once, where the file
    uses it, when the file is loaded; setting it afterwards changes nothing the Runner
    reads. The warning names the fields that hold its value, which are what to set.
    """
    model_has_preprocessor = 'data_preprocessor' in cfg.get('model', {})
    for key in options:
        name = key.split('.')[0]
        if name not in cfg or (name in RUNNER_KEYS and not (
                name == 'data_preprocessor' and model_has_preprocessor)):
            continue
        value = cfg[name]
        holders = [f for f in fields_holding(cfg.to_dict(), value) if f.split('.')[0] != name]
        holders.sort(key=lambda field: not field.endswith('.' + name))  # same name first
        instead = (f'set the field(s) that hold its value instead: {", ".join(holders[:6])}'
                   if holders else 'nothing the Runner reads holds its value')
        print_log(f'--cfg-options {key}={options[key]} has no effect: {name} is a variable '
                  'of the config file, already used where the file refers to it when the file '
                  f'was read; {instead}', logger='current', level=logging.WARNING)


def load_config(args: argparse.Namespace) -> Config:
    """``args.config`` with ``--cfg-options`` applied and the work dir set as MMSeg's tools
    do (``--work-dir``, else the config's, else ``./work_dirs/<config name>``). A config
    without ``default_scope`` gets ``'mmseg'``, as MMSeg's ``init_model`` assumes, so its
    types need no ``mmseg.`` prefix; options that cannot take effect are warned about
    (:func:`warn_ineffective_options`)."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        warn_ineffective_options(cfg, args.cfg_options)
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
    """Destroy the process group, then free what still refers to it (the runner and the
    DDP wrapper sit in reference cycles): left to the interpreter's teardown, gloo's
    destructor can abort the finished process ("terminate called without an active
    exception", about one 2-process run in three)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


def prepare_launch(cfg: Config, launcher: str) -> Config:
    """Adapt ``cfg`` to the machine before the Runner is built.

    On a machine without CUDA, ``SyncBN`` becomes ``BN`` (SyncBN needs CUDA) and, for
    ``--launcher pytorch`` (torchrun), the process group is created here with the gloo
    backend and the model is wrapped without ``device_ids``: MMEngine's own
    ``init_dist`` calls ``torch.cuda.set_device`` and cannot do this. That group, and
    everything that still refers to it, is destroyed at exit while the interpreter is
    still whole: left to the interpreter's teardown, gloo can abort the finished process
    ("terminate called without an active exception"). With CUDA the config is left as it is
    and a launched process joins the process group here, exactly as the Runner would
    (``mmengine.dist.init_dist`` with ``env_cfg.dist_cfg``; the Runner then skips it), so
    that the data can be checked on one rank before the Runner is built.

    Args:
        cfg (Config): The loaded config; modified in place and returned.
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
    """
    cfg.launcher = launcher
    if torch.cuda.is_available():
        if launcher != 'none' and not dist.is_initialized():
            init_dist(launcher, **cfg.get('env_cfg', {}).get('dist_cfg', {}))
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
