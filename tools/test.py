"""Test a segmentor; the command line of MMSegmentation's ``tools/test.py``."""
import argparse

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from dinolora_mmseg.datasets import leaf_configs
from dinolora_mmseg.datasets.data_checks import check_test_dataloader
from dinolora_mmseg.deployment import compile_segmentor
from dinolora_mmseg.engine.checkpoint_io import load_checkpoint_into
from dinolora_mmseg.engine.launch import add_common_args, prepare_launch
from dinolora_mmseg.utils.checkpoint_file import is_trusted
from dinolora_mmseg.utils.config import load_config


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='unpickle the checkpoint in full (only for a file you trust; '
                        'by default it is read weights-only)')
    parser.add_argument('--out', help='the dir to save the predicted label maps')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='the dir to save painted predictions (of every '
                        'image)')
    parser.add_argument('--wait-time', type=float, default=2, help='display interval (s)')
    parser.add_argument('--tta', action='store_true', help='test time augmentation')
    parser.add_argument('--compile', action='store_true',
                        help='run the model through torch.compile (inductor, weights frozen)')
    add_common_args(parser)
    return parser.parse_args()


def enable_visualization(cfg, args):
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise KeyError('the config has no default_hooks.visualization '
                       '(SegVisualizationHook) for --show/--show-dir')
    hook.draw = True
    if args.show:
        hook.show = True
        hook.wait_time = args.wait_time
    if args.show_dir:
        cfg.visualizer.save_dir = args.show_dir
        hook.interval = 1  # SegVisualizationHook draws every 50th image by default
    return cfg


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    cfg.load_from = None  # loaded strictly below: a checkpoint of another model is an error
    if args.show or args.show_dir:
        cfg = enable_visualization(cfg, args)
    if args.tta:
        for _, dataset in leaf_configs(cfg.test_dataloader.dataset, 'test_dataloader.dataset'):
            dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    prepare_launch(cfg, args.launcher, args.device)  # first: data checked once, on rank 0
    check_test_dataloader(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    load_checkpoint_into(runner, args.checkpoint, strict=True,
                         trusted=args.trust_checkpoint or is_trusted(cfg, args.checkpoint))
    if args.compile:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        compile_segmentor(model.module if args.tta else model)
    runner.test()


if __name__ == '__main__':
    main()
