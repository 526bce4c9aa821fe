"""Segment images with a trained model and save the predictions painted over them.

One PNG per image, named after it, with each pixel blended with the palette colour of
its predicted class and the class names written on their regions (MMSeg's
``MMSegInferencer`` and ``SegLocalVisualizer``)::

    python tools/misc/infer.py demo1.jpg demo2.jpg --config configs/dinov2_lora_voc.py \
        --checkpoint work_dirs/dinov2_lora_voc/iter_20000.pth --out outputs/
"""
import argparse
import os
import os.path as osp
import warnings
from typing import List, Optional, Sequence

from mmengine.config import DictAction
from mmengine.utils import track_iter_progress
from mmseg.apis import MMSegInferencer
from mmseg.utils import get_classes, get_palette

import dinolora_mmseg  # noqa: F401  (registers the DINOv2 backbone)
from dinolora_mmseg.datasets import leaf_configs
from dinolora_mmseg.datasets.data_checks import read_image_file
from dinolora_mmseg.deployment import compile_segmentor
from dinolora_mmseg.models import build_model
from dinolora_mmseg.utils.atomic_write import atomic_write_image
from dinolora_mmseg.utils.config import load_config


class Inferencer(MMSegInferencer):
    """MMSeg's inferencer with the model of :func:`build_model` (the checkpoint read
    weights-only and loaded strictly)."""

    def _init_model(self, cfg, weights, device='cpu'):
        model = build_model(cfg, weights, device)
        meta = model.dataset_meta
        if meta is None:  # as MMSeg's inferencer falls back
            warnings.warn('dataset_meta or class names are not saved in the checkpoint\'s '
                          'meta data, use classes of Cityscapes by default.')
            meta = dict(classes=get_classes('cityscapes'), palette=get_palette('cityscapes'))
        model.dataset_meta = dict(classes=meta.get('classes'), palette=meta.get('palette'))
        return model


def check_inputs(paths: Sequence[str], out_dir: str, opacity: float) -> List[str]:
    """The output path of each image, after :func:`read_image_file` read all of them.

    Raises:
        ValueError: Also where two images have the same file name, or for an opacity
            outside (0, 1].
    """
    if not 0 < opacity <= 1:
        raise ValueError(f'opacity must be in (0, 1], got {opacity}')
    outputs = {}
    for path in paths:
        read_image_file(path)
        out = osp.join(out_dir, osp.splitext(osp.basename(path))[0] + '.png')
        if out in outputs:
            raise ValueError(f'{outputs[out]} and {path} would both be written to {out}')
        outputs[out] = path
    return list(outputs)


def infer(images: Sequence[str], config: str, checkpoint: str, out_dir: str,
          opacity: float = 0.5, device: Optional[str] = None,
          cfg_options: Optional[dict] = None, compile_model: bool = False) -> List[str]:
    """Write an overlay of the prediction of the model for each image into ``out_dir``.

    Args:
        images (Sequence[str]): Image files.
        config (str): MMSeg config of the model.
        checkpoint (str): Its checkpoint (with ``meta.dataset_meta`` for the classes and
            palette, as the training tools write it).
        out_dir (str): Folder for the overlays, created if missing.
        opacity (float): Weight of the palette colour, in (0, 1].
        device (str, optional): Device to run on; default the GPU if there is one.
        cfg_options (dict, optional): Overrides of the config, key -> value.
        compile_model (bool): Run the model through ``torch.compile`` (inductor, weights
            frozen; the first image of each size compiles).

    Returns:
        list[str]: The written PNG files, in the order of ``images``.
    """
    outputs = check_inputs(images, out_dir, opacity)
    cfg = load_config(config, cfg_options)
    # The inferencer takes the test pipeline of test_dataloader.dataset: that of the
    # first dataset where it is a wrapper (ConcatDataset).
    _, cfg.test_dataloader.dataset = next(
        leaf_configs(cfg.test_dataloader.dataset, 'test_dataloader.dataset'))
    inferencer = Inferencer(cfg, checkpoint, device=device, scope=cfg.default_scope)
    inferencer.show_progress = False
    if compile_model:
        compile_segmentor(inferencer.model)
    os.makedirs(out_dir, exist_ok=True)
    for image, out in track_iter_progress(list(zip(images, outputs))):
        overlay = inferencer(image, return_vis=True, opacity=opacity)['visualization']
        atomic_write_image(out, overlay)
    return outputs


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files')
    parser.add_argument('--config', required=True, help='config file of the model')
    parser.add_argument('--checkpoint', required=True, help='checkpoint file')
    parser.add_argument('--out', required=True, help='folder for the overlay PNGs')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='opacity of the painted prediction, in (0, 1]')
    parser.add_argument('--device', help='e.g. cpu or cuda:0 (default: GPU if available)')
    parser.add_argument('--compile', action='store_true',
                        help='run the model through torch.compile (inductor, weights frozen)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    return parser.parse_args()


def main():
    args = parse_args()
    outputs = infer(args.images, args.config, args.checkpoint, args.out, args.opacity,
                    args.device, args.cfg_options, args.compile)
    print(f'\n{len(outputs)} overlays written to {args.out}')


if __name__ == '__main__':
    main()
