"""Show DINOv2 patch features of several images as colours, by two PCAs fit jointly.

The signature figure of DINOv2: a first 1-component PCA over the patches of all images
separates foreground from background, a second 3-component PCA over the foreground
patches gives their colours (background black)::

    python tools/analysis_tools/visualize_pca.py img1.jpg img2.jpg --out pca.png \
        --arch large --registers 4 --pretrained checkpoints/dinov2_vitl14_reg4_pretrain.pth
    python tools/analysis_tools/visualize_pca.py img1.jpg img2.jpg --out pca.png \
        --config configs/dinov2_lora_voc.py --checkpoint work_dirs/dinov2_lora_voc/iter_20000.pth

The output is one PNG: the images in the top row, their PCA maps below.
"""
import argparse
import logging
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.utils import ProgressBar
from mmseg.apis import init_model
from sklearn.decomposition import PCA
from sklearn.preprocessing import minmax_scale

from dinolora_mmseg.models.backbones import DINOv2
from dinolora_mmseg.utils.atomic_write import atomic_write_image

# ImageNet mean and std of RGB images in 0..255, as the configs' data_preprocessor.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def load_image(path: str) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not an image OpenCV can decode.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'Image not found: {path}')
    image = mmcv.imread(path)
    if image is None:
        raise ValueError(f'Cannot read {path} as an image (not a format OpenCV decodes)')
    return mmcv.bgr2rgb(image)


def build_backbone(arch: Union[str, Dict] = 'large',
                   num_register_tokens: int = 4,
                   pretrained: Optional[str] = None,
                   config: Optional[str] = None,
                   checkpoint: Optional[str] = None,
                   cfg_options: Optional[Dict] = None,
                   device: str = 'cpu') -> DINOv2:
    """The DINOv2 backbone to visualise, set to return the last block, final-normed.

    Either a backbone by ``arch`` (random weights, with a warning, unless
    ``pretrained`` names an official-layout file) or the backbone of the segmentor of
    ``config`` with ``checkpoint`` loaded (LoRA adapters active).

    Args:
        arch (str | dict): DINOv2 arch (see :class:`DINOv2`); ignored with ``config``.
        num_register_tokens (int): Register tokens; ignored with ``config``.
        pretrained (str, optional): Official-layout weight file; ignored with ``config``.
        config (str, optional): MMSeg config whose ``model.backbone`` is a DINOv2.
        checkpoint (str, optional): Checkpoint of that model; required with ``config``.
        cfg_options (dict, optional): Overrides of the config, key -> value.
        device (str): Device to run on.

    Returns:
        DINOv2: In eval mode on ``device``.
    """
    if config is None:
        backbone = DINOv2(arch=arch, num_register_tokens=num_register_tokens,
                          pretrained=pretrained)
    else:
        if checkpoint is None:
            raise ValueError(f'{config} needs a checkpoint of its model')
        backbone = init_model(config, checkpoint, device=device,
                              cfg_options=cfg_options).backbone
        if not isinstance(backbone, DINOv2):
            raise TypeError(f'The backbone of {config} is a {type(backbone).__name__}, '
                            'expected DINOv2')
    backbone.out_indices = (backbone.num_layers - 1, )
    backbone.final_norm = True
    return backbone.to(device).eval()


@torch.no_grad()
def extract_features(backbone: DINOv2, images: Sequence[np.ndarray],
                     size: int = 448) -> List[np.ndarray]:
    """Patch features of the last block of each image, resized to ``size`` x ``size``.

    Args:
        backbone (DINOv2): From :func:`build_backbone`.
        images (Sequence[np.ndarray]): RGB uint8 images ``(H, W, 3)``.
        size (int): Side of the square network input, a multiple of the patch size.

    Returns:
        list[np.ndarray]: ``(size / 14, size / 14, C)`` float32 features per image.
    """
    if size < backbone.patch_size or size % backbone.patch_size:
        raise ValueError(f'size must be a positive multiple of {backbone.patch_size}, '
                         f'got {size}')
    device = next(backbone.parameters()).device
    features = []
    progress = ProgressBar(len(images))
    for image in images:
        x = mmcv.imnormalize(mmcv.imresize(image, (size, size)), np.array(MEAN),
                             np.array(STD), to_rgb=False)
        x = torch.from_numpy(x).permute(2, 0, 1)[None].to(device)
        features.append(backbone(x)[0][0].permute(1, 2, 0).float().cpu().numpy())
        progress.update()
    return features


def pca_maps(features: Sequence[np.ndarray], threshold: float = 0.5,
             direction: str = 'auto') -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Colour patch features by two PCAs fit over the patches of all images together.

    The first principal component, min-max scaled to [0, 1], separates foreground
    (above ``threshold``) from background. A 3-component PCA of the foreground patches,
    each component min-max scaled to [0, 1], gives their RGB colour; background is black.

    Args:
        features (Sequence[np.ndarray]): ``(h, w, C)`` patch features per image.
        threshold (float): Foreground threshold on the scaled first component, in [0, 1].
        direction (str): ``'positive'``: foreground is where the first component is
            high; ``'negative'``: where it is low; ``'auto'``: the sign for which most
            patches on the image borders are background.

    Returns:
        tuple[list[np.ndarray], list[np.ndarray]]: Per image, the ``(h, w, 3)`` float
        RGB map in [0, 1] and the ``(h, w)`` boolean foreground mask.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f'threshold must be in [0, 1], got {threshold}')
    if direction not in ('auto', 'positive', 'negative'):
        raise ValueError(f"direction must be 'auto', 'positive' or 'negative', got {direction!r}")
    shapes = [f.shape[:2] for f in features]
    patches = np.concatenate([f.reshape(-1, f.shape[-1]) for f in features])
    first = minmax_scale(PCA(n_components=1).fit_transform(patches)[:, 0])
    if direction == 'auto':
        border = np.concatenate([_border(grid) for grid in _split(first, shapes)])
        negative_wins = (1 - border > threshold).mean() < (border > threshold).mean()
        direction = 'negative' if negative_wins else 'positive'
        print_log(f'foreground direction: {direction}', logger='current')
    if direction == 'negative':
        first = 1 - first
    foreground = first > threshold
    if foreground.sum() < 3:
        raise ValueError(f'{foreground.sum()} of {len(patches)} patches are foreground at '
                         f'threshold {threshold} (direction {direction}); the second PCA '
                         'needs at least 3: lower the threshold')
    colours = np.zeros((len(patches), 3))
    colours[foreground] = minmax_scale(PCA(n_components=3).fit_transform(patches[foreground]))
    maps = [c.reshape(*shape, 3) for c, shape in zip(_split(colours, shapes), shapes)]
    return maps, _split(foreground, shapes)


def _split(values: np.ndarray, shapes: Sequence[Tuple[int, int]]) -> List[np.ndarray]:
    """Cut per-patch ``values`` of all images into one ``(h, w, ...)`` array per image."""
    ends = np.cumsum([h * w for h, w in shapes])
    return [v.reshape(*shape, *v.shape[1:])
            for v, shape in zip(np.split(values, ends[:-1]), shapes)]


def _border(grid: np.ndarray) -> np.ndarray:
    """The values on the outer ring of a 2-D grid."""
    return np.concatenate([grid[0], grid[-1], grid[1:-1, 0], grid[1:-1, -1]])


def make_grid(images: Sequence[np.ndarray], maps: Sequence[np.ndarray],
              height: int = 224) -> np.ndarray:
    """The images in the top row, their maps (nearest upsampling) in the row below.

    Every image is scaled to ``height`` keeping its aspect ratio; its map to the same
    size, so each map lies over its image.

    Returns:
        np.ndarray: RGB uint8 ``(2 * height, sum of the scaled widths, 3)``.
    """
    columns = []
    for image, colours in zip(images, maps):
        size = (max(1, round(image.shape[1] * height / image.shape[0])), height)
        colours = (colours * 255).round().astype(np.uint8)
        columns.append(np.concatenate([mmcv.imresize(image, size, interpolation='area'),
                                       mmcv.imresize(colours, size, interpolation='nearest')]))
    return np.concatenate(columns, axis=1)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--arch', choices=sorted(DINOv2.arch_zoo),
                        help='DINOv2 size (default: large)')
    parser.add_argument('--registers', type=int,
                        help='register tokens: 4 for the *_reg4 releases, 0 without (default: 4)')
    parser.add_argument('--pretrained', help='official-layout DINOv2 weights (default: random)')
    parser.add_argument('--config', help='MMSeg config of a trained model instead of --arch')
    parser.add_argument('--checkpoint', help='checkpoint of the --config model')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the --config, key=value')
    parser.add_argument('--size', type=int, default=448,
                        help='side of the square network input in pixels, rounded to a '
                        'multiple of 14 (default: 448)')
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
        given = [name for name in ('arch', 'registers', 'pretrained')
                 if getattr(args, name) is not None]
        if given:
            parser.error(f'--config takes the backbone from the config; drop '
                         f'{", ".join("--" + name for name in given)}')
    elif args.cfg_options:
        parser.error('--cfg-options needs --config')
    if not 0 <= args.threshold <= 1:
        parser.error(f'--threshold must be in [0, 1], got {args.threshold}')
    if not args.out.lower().endswith('.png'):
        parser.error(f'--out must name a .png file, got {args.out}')
    return args


def main():
    args = parse_args()
    images = [load_image(path) for path in args.images]
    size = max(1, round(args.size / 14)) * 14
    if size != args.size:
        print_log(f'--size {args.size} rounded to {size}, a multiple of the 14-pixel patches',
                  logger='current', level=logging.WARNING)
    backbone = build_backbone(arch=args.arch or 'large',
                              num_register_tokens=4 if args.registers is None else args.registers,
                              pretrained=args.pretrained, config=args.config,
                              checkpoint=args.checkpoint, cfg_options=args.cfg_options,
                              device=args.device or get_device())
    features = extract_features(backbone, images, size)
    maps, _ = pca_maps(features, args.threshold, args.direction)
    grid = make_grid(images, maps, args.height)
    atomic_write_image(args.out, grid)
    print(f'\nPCA of {len(images)} images written to {args.out}')


if __name__ == '__main__':
    main()
