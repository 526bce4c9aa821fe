"""Evaluate an exported ONNX model on a config's test set, as tools/test.py evaluates
the PyTorch model (MMSeg's ``tools/deploy_test.py``, for onnxruntime).

    python tools/deployment/deploy_test.py CONFIG MODEL.onnx [--out DIR] [--work-dir DIR] \
        [--threads N] [--cfg-options ...]

The config's test dataloader, pipeline and evaluator (e.g. ``IoUMetric``) run as in
``tools/test.py``; the model is the ONNX file, run by onnxruntime on the CPU
(:class:`~dinolora_mmseg.deployment.ONNXRuntimeSegmentor`). A file of a fixed
input size takes test images up to that size (they are padded to it).
"""
import argparse
import os.path as osp

from mmengine.runner import Runner

from dinolora_mmseg.datasets.data_checks import check_dataloaders
from dinolora_mmseg.engine.launch import add_common_args
from dinolora_mmseg.utils.config import load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate an ONNX model on a test set')
    parser.add_argument('config', help='config whose test set and evaluator to use')
    parser.add_argument('model', help='.onnx file of tools/deployment/pytorch2onnx.py')
    parser.add_argument('--out', help='the dir to save the predicted label maps')
    parser.add_argument('--threads', type=int, help='onnxruntime intra-op threads')
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.launcher != 'none':
        parser.error('deploy_test.py runs in one process (--launcher none)')
    return args


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.model):
        raise FileNotFoundError(f'ONNX model not found: {args.model}')
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    # The file normalises itself: its preprocessor only makes RGB float images.
    cfg.model = dict(type='ONNXRuntimeSegmentor', onnx_file=args.model, threads=args.threads,
                     data_preprocessor=dict(type='SegDataPreProcessor', bgr_to_rgb=True))
    cfg.load_from = None
    cfg.launcher = 'none'
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    check_dataloaders(cfg, ['test_dataloader'])
    Runner.from_cfg(cfg).test()


if __name__ == '__main__':
    main()
