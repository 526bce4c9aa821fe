"""Train a segmentor; the command line of MMSegmentation's ``tools/train.py``."""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from dinolora_mmseg.engine.checkpoint_io import find_resumable_checkpoint
from dinolora_mmseg.engine.data_checks import check_dataloaders
from dinolora_mmseg.engine.launch import prepare_launch


def parse_args():
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the latest checkpoint in the work_dir')
    parser.add_argument('--amp', action='store_true',
                        help='bfloat16 automatic mixed precision (CPU and GPU)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
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
        # mmengine would trust last_checkpoint blindly; skip damaged files instead.
        cfg.load_from = find_resumable_checkpoint(cfg.work_dir)
    check_dataloaders(cfg, ['train_dataloader', 'val_dataloader'] if cfg.get('val_cfg')
                      else ['train_dataloader'])
    prepare_launch(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
