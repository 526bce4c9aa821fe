"""Train a segmentor; the command line of MMSegmentation's ``tools/train.py``.

Beyond MMSeg's script: a second training into a work dir in use is refused (see
``dinolora_mmseg.engine.work_dir_lock``); ``load_from`` is loaded by ``LoadCheckpointHook``
(CRC-checked, weights-only unless listed in ``trusted_checkpoints``); ``--resume`` skips
damaged or missing checkpoints and, with none left, says so and starts from the beginning.
"""
import argparse
import logging

from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from dinolora_mmseg.datasets.data_checks import check_dataloaders
from dinolora_mmseg.engine.checkpoint_io import find_resumable_checkpoint, load_from_through_hook
from dinolora_mmseg.engine.launch import add_common_args, prepare_launch
from dinolora_mmseg.engine.precision import use_amp
from dinolora_mmseg.engine.work_dir_lock import lock_work_dir
from dinolora_mmseg.utils.config import load_config


def parse_args():
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the latest checkpoint in the work_dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision: bfloat16 on CPUs and GPUs that '
                        'have it, float16 with loss scaling on older GPUs')
    add_common_args(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    lock_work_dir(cfg.work_dir)
    cfg.resume = args.resume
    if args.resume and cfg.get('load_from') is None:
        # mmengine would trust last_checkpoint blindly; skip damaged or missing files instead.
        cfg.load_from = find_resumable_checkpoint(cfg.work_dir)
        if cfg.load_from is None:
            print_log(f'--resume: no complete checkpoint in {cfg.work_dir}; training starts '
                      'from the beginning', logger='current', level=logging.WARNING)
            cfg.resume = False
    load_from_through_hook(cfg)
    prepare_launch(cfg, args.launcher, args.device)  # first: data checked once, on rank 0
    check_dataloaders(cfg, ['train_dataloader', 'val_dataloader'] if cfg.get('val_cfg')
                      else ['train_dataloader'])
    if args.amp:
        use_amp(cfg.optim_wrapper)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
