"""Train a segmentor; the command line of MMSegmentation's ``tools/train.py``.

Beyond MMSeg's script: a second training into a work dir in use is refused (see
``dinolora_mmseg.engine.work_dir_lock``); a stock ``CheckpointHook`` in
``default_hooks`` becomes ``AtomicCheckpointHook`` (same options; a kill or a full
disk while saving keeps the previous checkpoint); ``--resume`` skips damaged or missing
checkpoints and, with none left, says so and starts from the beginning.
"""
import argparse
import logging

import torch
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from dinolora_mmseg.engine.checkpoint_io import find_resumable_checkpoint
from dinolora_mmseg.datasets.data_checks import check_dataloaders
from dinolora_mmseg.engine.launch import add_common_args, load_config, prepare_launch
from dinolora_mmseg.engine.work_dir_lock import lock_work_dir

STOCK_CHECKPOINT_HOOKS = ('CheckpointHook', 'mmengine.CheckpointHook', CheckpointHook)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the latest checkpoint in the work_dir')
    parser.add_argument('--amp', action='store_true',
                        help='bfloat16 automatic mixed precision (CPU and GPU)')
    add_common_args(parser)
    return parser.parse_args()


def use_atomic_checkpoint_hook(cfg) -> None:
    """Turn a stock ``CheckpointHook`` in ``cfg.default_hooks`` into ``AtomicCheckpointHook``."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if hook is not None and hook.get('type') in STOCK_CHECKPOINT_HOOKS:
        hook['type'] = 'AtomicCheckpointHook'
        print_log('default_hooks.checkpoint: CheckpointHook replaced by AtomicCheckpointHook '
                  '(same options; outdated checkpoints are removed only after the new one is '
                  'complete)', logger='current')


def main():
    args = parse_args()
    cfg = load_config(args)
    lock_work_dir(cfg.work_dir)
    use_atomic_checkpoint_hook(cfg)
    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') in ('AmpOptimWrapper',
                                                             'BF16OptimWrapper'):
            print_log('AMP training is already enabled in the config', logger='current')
        elif torch.cuda.is_available():
            cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype='bfloat16')
        else:  # mmengine's AmpOptimWrapper needs a GPU
            cfg.optim_wrapper.type = 'BF16OptimWrapper'
    cfg.resume = args.resume
    if args.resume and cfg.get('load_from') is None:
        # mmengine would trust last_checkpoint blindly; skip damaged or missing files instead.
        cfg.load_from = find_resumable_checkpoint(cfg.work_dir)
        if cfg.load_from is None:
            print_log(f'--resume: no complete checkpoint in {cfg.work_dir}; training starts '
                      'from the beginning', logger='current', level=logging.WARNING)
            cfg.resume = False
    prepare_launch(cfg, args.launcher)  # first: the data is checked once, on rank 0
    check_dataloaders(cfg, ['train_dataloader', 'val_dataloader'] if cfg.get('val_cfg')
                      else ['train_dataloader'])
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
