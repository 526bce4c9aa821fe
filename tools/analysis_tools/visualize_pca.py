"""Show DINOv2/DINOv3 patch features of several images as colours, by two PCAs fit jointly.

The signature figure of DINOv2 and DINOv3: a first 1-component PCA over the patches of
all images separates foreground from background, a second 3-component PCA over the
foreground patches gives their colours (background black)::

    python tools/analysis_tools/visualize_pca.py img1.jpg img2.jpg --out pca.png \
        --arch large --registers 4 --pretrained checkpoints/dinov2_vitl14_reg4_pretrain.pth
    python tools/analysis_tools/visualize_pca.py img1.jpg img2.jpg --out pca.png \
        --family dinov3 --arch large \
        --pretrained checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth
    python tools/analysis_tools/visualize_pca.py img1.jpg img2.jpg --out pca.png \
        --config configs/dinov2_lora_voc.py --checkpoint work_dirs/dinov2_lora_voc/iter_20000.pth

An official backbone gets ImageNet's mean and std; the backbone of a config gets the
channel order, mean and std of the config's data preprocessor. The output is one PNG: the
images in the top row, their PCA maps below.
"""
import argparse
import logging
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.utils import track_iter_progress
from dinolora_mmseg.datasets.data_checks import read_image_file
from dinolora_mmseg.models import build_model
from dinolora_mmseg.models.backbones import DINOv2, DINOv3
from dinolora_mmseg.models.backbones.dino_vit_base import DINOViTBase
from dinolora_mmseg.utils.atomic_write import atomic_write_image
from dinolora_mmseg.utils.config import load_config
from dinolora_mmseg.visualization import make_grid, pca_maps

# Family -> (backbone class, the name of its argument for the tokens after the class token)
FAMILIES = dict(dinov2=(DINOv2, 'num_register_tokens'), dinov3=(DINOv3, 'num_storage_tokens'))


class Normalisation(NamedTuple):
    """What a model's data preprocessor does to an image before the backbone.

    Args:
        mean (Sequence[float]): Per channel, subtracted (0..255 scale).
        std (Sequence[float]): Per channel, divided by.
        rgb (bool): Channels in RGB order (MMSeg's ``bgr_to_rgb=True``); BGR if False.
    """
    mean: Sequence[float]
    std: Sequence[float]
    rgb: bool


# ImageNet mean and std of RGB images in 0..255, as the official models were trained.
IMAGENET = Normalisation((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), True)


def config_normalisation(preprocessor: Dict) -> Normalisation:
    """The :class:`Normalisation` of a config's ``model.data_preprocessor`` settings."""
    mean, std = preprocessor.get('mean'), preprocessor.get('std')
    return Normalisation(tuple(mean) if mean is not None else (0.0, ) * 3,
                         tuple(std) if std is not None else (1.0, ) * 3,
                         bool(preprocessor.get('bgr_to_rgb') or preprocessor.get('rgb_to_bgr')))


def load_image(path: str) -> np.ndarray:
    """An image file as RGB uint8 ``(H, W, 3)`` (errors of :func:`read_image_file`)."""
    return mmcv.bgr2rgb(read_image_file(path))


def build_backbone(family: str = 'dinov2',
                   arch: Union[str, Dict] = 'large',
                   num_register_tokens: int = 4,
                   pretrained: Optional[str] = None,
                   config: Optional[str] = None,
                   checkpoint: Optional[str] = None,
                   cfg_options: Optional[Dict] = None,
                   device: str = 'cpu') -> Tuple[DINOViTBase, Normalisation]:
    """The backbone to visualise, set to return the last block, final-normed, and the
    normalisation of its inputs.

    Either an official DINOv2 or DINOv3 by ``arch`` (random weights, with a warning,
    unless ``pretrained`` names an official-layout file; ImageNet normalisation) or the
    backbone of the segmentor of ``config`` with ``checkpoint`` loaded (LoRA adapters
    active; the normalisation of the config's data preprocessor).

    Args:
        family (str): ``'dinov2'`` or ``'dinov3'``; ignored with ``config``.
        arch (str | dict): Arch of that family (see :class:`DINOv2`, :class:`DINOv3`);
            ignored with ``config``.
        num_register_tokens (int): Register tokens (DINOv2) or storage tokens (DINOv3);
            ignored with ``config``.
        pretrained (str, optional): Official-layout weight file; ignored with ``config``.
        config (str, optional): MMSeg config whose ``model.backbone`` is a DINOv2 or DINOv3.
        checkpoint (str, optional): Checkpoint of that model; required with ``config``.
        cfg_options (dict, optional): Overrides of the config, key -> value.
        device (str): Device to run on.

    Returns:
        tuple[DINOViTBase, Normalisation]: The backbone in eval mode on ``device``, and
        what its inputs need.
    """
    if config is None:
        if family not in FAMILIES:
            raise ValueError(f'family must be one of {sorted(FAMILIES)}, got {family!r}')
        backbone_class, tokens = FAMILIES[family]
        backbone = backbone_class(arch=arch, pretrained=pretrained,
                                  **{tokens: num_register_tokens})
        normalisation = IMAGENET
    else:
        if checkpoint is None:
            raise ValueError(f'{config} needs a checkpoint of its model')
        model = build_model(load_config(config, cfg_options), checkpoint, device)
        backbone = model.backbone
        if not isinstance(backbone, DINOViTBase):
            raise TypeError(f'The backbone of {config} is a {type(backbone).__name__}, '
                            'expected DINOv2 or DINOv3')
        normalisation = config_normalisation(model.cfg.model.data_preprocessor)
    backbone.out_indices = (backbone.num_layers - 1, )
    backbone.final_norm = True
    return backbone.to(device).eval(), normalisation


@torch.no_grad()
def extract_features(backbone: DINOViTBase, images: Sequence[np.ndarray], size: int = 448,
                     normalisation: Normalisation = IMAGENET) -> List[np.ndarray]:
    """Patch features of the last block of each image, resized to ``size`` x ``size``.

    Args:
        backbone (DINOViTBase): From :func:`build_backbone`.
        images (Sequence[np.ndarray]): RGB uint8 images ``(H, W, 3)``.
        size (int): Side of the square network input, a multiple of the patch size.
        normalisation (Normalisation): What the backbone's inputs need.

    Returns:
        list[np.ndarray]: ``(size / p, size / p, C)`` float32 features per image, ``p``
        the patch size.
    """
    if size < backbone.patch_size or size % backbone.patch_size:
        raise ValueError(f'size must be a positive multiple of {backbone.patch_size}, '
                         f'got {size}')
    device = next(backbone.parameters()).device
    features = []
    for image in track_iter_progress(list(images)):
        resized = mmcv.imresize(image, (size, size))
        if not normalisation.rgb:
            resized = mmcv.rgb2bgr(resized)
        x = mmcv.imnormalize(resized, np.array(normalisation.mean), np.array(normalisation.std),
                             to_rgb=False)
        x = torch.from_numpy(x).permute(2, 0, 1)[None].to(device)
        features.append(backbone(x)[0][0].permute(1, 2, 0).float().cpu().numpy())
    return features


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--family', choices=sorted(FAMILIES),
                        help='official backbone family (default: dinov2)')
    parser.add_argument('--arch', choices=sorted(set(DINOv2.arch_zoo) | set(DINOv3.arch_zoo)),
                        help='size, of the --family: DINOv2 ' + ', '.join(DINOv2.arch_zoo)
                        + '; DINOv3 ' + ', '.join(DINOv3.arch_zoo) + ' (default: large)')
    parser.add_argument('--registers', type=int,
                        help='register tokens of a DINOv2 (4 for the *_reg4 releases, 0 '
                        'without) or storage tokens of a DINOv3 (4 in every release) '
                        '(default: 4)')
    parser.add_argument('--pretrained', help='official-layout weights of the --family '
                        '(default: random)')
    parser.add_argument('--config', help='MMSeg config of a trained model instead of --arch')
    parser.add_argument('--checkpoint', help='checkpoint of the --config model')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the --config, key=value')
    parser.add_argument('--size', type=int, default=448,
                        help='side of the square network input in pixels, rounded to a '
                        'multiple of the patch size (default: 448)')
    parser.add_argument('--threshold', type=float, default=0.5,
                        help='foreground threshold on the first component scaled to [0, 1]')
    parser.add_argument('--direction', choices=['auto', 'positive', 'negative'], default='auto',
                        help='foreground where the first component is high (positive), low '
                        '(negative), or whichever leaves the image borders background (auto)')
    parser.add_argument('--height', type=int, default=224,
                        help='height of each row of the output in pixels')
    parser.add_argument('--device', help='e.g. cpu or cuda:0 (default: GPU if available)')
    args = parser.parse_args()
    if args.config or args.checkpoint:
        if not (args.config and args.checkpoint):
            parser.error('--config and --checkpoint go together')
        given = [name for name in ('family', 'arch', 'registers', 'pretrained')
                 if getattr(args, name) is not None]
        if given:
            parser.error(f'--config takes the backbone from the config; drop '
                         f'{", ".join("--" + name for name in given)}')
    elif args.cfg_options:
        parser.error('--cfg-options needs --config')
    else:
        args.family = args.family or 'dinov2'
        backbone_class = FAMILIES[args.family][0]
        args.arch = args.arch or 'large'
        if args.arch not in backbone_class.arch_zoo:
            parser.error(f'--arch {args.arch} is not a {backbone_class.family} size; choose '
                         f'one of {", ".join(backbone_class.arch_zoo)}')
    if not 0 <= args.threshold <= 1:
        parser.error(f'--threshold must be in [0, 1], got {args.threshold}')
    if not args.out.lower().endswith('.png'):
        parser.error(f'--out must name a .png file, got {args.out}')
    return args


def main():
    args = parse_args()
    images = [load_image(path) for path in args.images]
    backbone, normalisation = build_backbone(
        family=args.family, arch=args.arch,
        num_register_tokens=4 if args.registers is None else args.registers,
        pretrained=args.pretrained, config=args.config, checkpoint=args.checkpoint,
        cfg_options=args.cfg_options, device=args.device or get_device())
    patch = backbone.patch_size
    size = max(1, round(args.size / patch)) * patch
    if size != args.size:
        print_log(f'--size {args.size} rounded to {size}, a multiple of the {patch}-pixel '
                  'patches', logger='current', level=logging.WARNING)
    features = extract_features(backbone, images, size, normalisation)
    maps, _ = pca_maps(features, args.threshold, args.direction)
    grid = make_grid(images, maps, args.height)
    atomic_write_image(args.out, grid)
    print(f'\nPCA of {len(images)} images written to {args.out}')


if __name__ == '__main__':
    main()
