"""Export a trained segmentor to ONNX, LoRA folded in, and check it with onnxruntime.

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --out model.onnx \
        [--shape H W] [--dynamic] [--check-image IMAGE] [--cfg-options ...]

The file runs without PyTorch, mmcv or mmseg (``tools/deployment/onnx_infer.py``):

- input ``image``: ``(B, 3, H, W)`` float32 RGB values 0..255 (a uint8 image as float),
  any batch size; the data preprocessor's normalisation is part of the graph;
- output ``logits``: ``(B, num_classes, H, W)`` float32 at the input's size (take the
  argmax over classes for the class map);
- metadata: class names, palette, and the resizing and padding to do first
  (:mod:`dinolora_mmseg.deployment.metadata`).

By default ``H`` x ``W`` is fixed (``--shape``, else the test pipeline's ``Resize``
scale), and the backbone's position tables are constants for it. ``--dynamic`` leaves
``H`` and ``W`` free (multiples of the patch size), where every operator allows it; it
is refused, naming the operator, where one does not.

Before the file is written, onnxruntime runs it on photos (``--check-image``, else
scikit-image's) and must reproduce PyTorch's logits within ``--tolerance``.
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction

import dinolora_mmseg  # noqa: F401  (registers the models)
from dinolora_mmseg.deployment import (build_deploy_segmentor, check_second_size,
                                       deploy_metadata, export_onnx, input_divisor,
                                       max_logit_difference, onnxruntime_session, sample_images,
                                       segmentor_graph, staged_onnx, test_resize)
from dinolora_mmseg.utils.config import load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file of the model')
    parser.add_argument('checkpoint', help='checkpoint file (LoRA adapters are folded in)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: the scale of the test '
                        "pipeline's Resize, rounded up to the patch size)")
    parser.add_argument('--dynamic', action='store_true',
                        help='any input height and width (multiples of the patch size)')
    parser.add_argument('--check-image', help='image to compare onnxruntime and PyTorch on '
                        '(default: photos that ship with scikit-image)')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest absolute logit difference accepted')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    args = parser.parse_args(argv)
    if args.shape and min(args.shape) < 1:
        parser.error(f'--shape must be positive, got {args.shape}')
    return args


def export_shape(cfg: Config, shape, divisor: int):
    """``--shape``, or the test pipeline's resize scale rounded up to ``divisor``.

    Raises:
        ValueError: ``shape`` is not a multiple of ``divisor``, or there is neither.
    """
    if shape is None:
        resize = test_resize(cfg)
        if resize is None:
            raise ValueError(f'{cfg.filename}: its test pipeline has no Resize to take the '
                             'input size from; give --shape H W')
        w, h = resize['scale']
        shape = [-(-h // divisor) * divisor, -(-w // divisor) * divisor]
        print(f'--shape not given: {shape[0]}x{shape[1]}, the test pipeline\'s Resize scale '
              f'{resize["scale"]} (w, h) rounded up to multiples of {divisor}')
    if any(side % divisor for side in shape):
        up = [-(-side // divisor) * divisor for side in shape]
        raise ValueError(f'--shape {shape[0]} {shape[1]} is not a multiple of {divisor} (the '
                         f'patch size / size_divisor); use e.g. --shape {up[0]} {up[1]}')
    return tuple(shape)


def main(argv=None):
    args = parse_args(argv)
    if args.check_image and not osp.isfile(args.check_image):
        raise FileNotFoundError(f'--check-image {args.check_image} does not exist')
    cfg = load_config(args.config, args.cfg_options)
    model, meta = build_deploy_segmentor(cfg, args.checkpoint)
    metadata = deploy_metadata(cfg, model, meta, args.checkpoint)
    divisor = input_divisor(model)
    shape = export_shape(cfg, args.shape, divisor)
    graph = segmentor_graph(model)
    images = sample_images(shape, 2, args.check_image)
    with torch.no_grad():
        expected = graph(images)  # before the position tables become constants
    program = export_onnx(graph, images, args.dynamic, divisor)
    with staged_onnx(program, args.out, metadata) as staged:
        session = onnxruntime_session(staged)
        difference = max_logit_difference(session, graph, images, expected)
        if difference > args.tolerance:
            raise ValueError(f'onnxruntime differs from PyTorch by {difference:.3g} in the '
                             f'logits (> --tolerance {args.tolerance:g}); {args.out} was not '
                             'written')
        checks = [f'{shape[0]}x{shape[1]}: {difference:.2g}']
        if args.dynamic:
            size, other = check_second_size(session, graph, images, divisor, args.tolerance)
            checks.append(f'{size[0]}x{size[1]}: {other:.2g}')
        weights = sum(t.numel() for t in graph.state_dict().values())
    size = sum(os.path.getsize(p) for p in (args.out, args.out + '.data') if osp.isfile(p))
    print(f'onnxruntime reproduces PyTorch (largest logit difference, batch of 2 photos, '
          f'{"; ".join(checks)}; tolerance {args.tolerance:g})')
    print(f'wrote {args.out}: {size / 2**20:.1f} MiB, input "image" (B, 3, '
          f'{"H, W" if args.dynamic else f"{shape[0]}, {shape[1]}"}) float32 RGB 0-255, '
          f'output "logits" (B, {model.decode_head.out_channels}, H, W); the PyTorch model '
          f'has {weights:,} weights with the LoRA adapters folded in')


if __name__ == '__main__':
    main()
