"""Write a small deterministic segmentation dataset in the Pascal VOC 2012 and ADE20k layouts.

Scenes are textured objects of several classes on textured backgrounds, so classes
are told apart by colour and texture, as in photos, not by position or a flat colour::

    python tools/misc/make_demo_data.py data
    # -> data/VOCdevkit/VOC2012, data/ade/ADEChallengeData2016

The folders are the ones MMSeg's ``pascal_voc12.py`` and ``ade20k.py`` dataset configs
read. Each dataset is written to a temporary folder first and moved into place when
complete, so an interrupted run never leaves half a dataset.
"""
import argparse
import colorsys
import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import cv2
import numpy as np
from PIL import Image

# Pascal VOC labels used by the demo scenes (0 is background, 255 the border).
VOC_CLASSES = {1: 'aeroplane', 3: 'bird', 7: 'car', 8: 'cat', 12: 'dog', 15: 'person'}
# ADE20k labels (1-based in the annotation PNGs, 0 = "other"): background stuff and things.
ADE_STUFF = {3: 'sky', 10: 'grass'}
ADE_THINGS = {2: 'building', 5: 'tree', 13: 'person', 21: 'car'}


def voc_palette() -> List[int]:
    """The 256-entry colour map of the Pascal VOC annotation PNGs, flattened."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def texture(label: int, shape: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An RGB float texture that identifies ``label``: a hue, a pattern and a period."""
    h, w = shape
    hue = (label * 0.6180339887) % 1.0
    base = np.array(colorsys.hsv_to_rgb(hue, 0.75, 0.85))
    other = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.5, 0.5))
    period = 5 + 2 * (label % 4)
    angle = np.deg2rad(37 * label)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    kind = label % 3
    if kind == 0:  # stripes
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    elif kind == 1:  # checkerboard
        pattern = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    else:  # dots
        pattern = ((np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period)) > 0.4)
        pattern = pattern.astype(np.float32)
    mix = 0.65 + 0.35 * pattern[..., None]
    rgb = base * mix + other * (1 - mix)
    return rgb * rng.uniform(0.85, 1.1) + rng.normal(0, 0.04, (h, w, 3))


def clutter(shape: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An RGB float background of no class: two muted colours blended by random waves."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.zeros(shape, np.float32)
    for _ in range(4):
        angle, period = rng.uniform(0, np.pi), rng.uniform(12, 80)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    low, high = (np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.35),
                                              rng.uniform(0.3, 0.8))) for _ in range(2))
    rgb = low * field[..., None] + high * (1 - field[..., None])
    return rgb + rng.normal(0, 0.04, (h, w, 3))


def random_shape(shape: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A filled ellipse, rectangle or triangle covering a good part of the image."""
    h, w = shape
    mask = np.zeros(shape, np.uint8)
    cx, cy = rng.integers(w // 6, w - w // 6), rng.integers(h // 6, h - h // 6)
    rx, ry = rng.integers(min(h, w) // 8, min(h, w) // 3, size=2)
    kind = rng.integers(3)
    if kind == 0:
        cv2.ellipse(mask, (int(cx), int(cy)), (int(rx), int(ry)), float(rng.uniform(0, 180)),
                    0, 360, 1, -1)
    elif kind == 1:
        cv2.rectangle(mask, (int(cx - rx), int(cy - ry)), (int(cx + rx), int(cy + ry)), 1, -1)
    else:
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
        angles += rng.uniform(-0.3, 0.3, 3)
        points = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [points.astype(np.int32)], 1)
    return mask.astype(bool)


def render(shape, background: np.ndarray, things: Dict[int, str],
           rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Paint 2-4 textured objects over a labelled background; returns (RGB uint8, labels)."""
    labels = background.copy()
    rgb = np.zeros((*shape, 3), np.float32)
    for label in np.unique(background):
        region = background == label
        fill = clutter(shape, rng) if label == 0 else texture(int(label), shape, rng)
        rgb[region] = fill[region]
    for _ in range(rng.integers(2, 5)):
        label = int(rng.choice(list(things)))
        mask = random_shape(shape, rng)
        rgb[mask] = texture(label, shape, rng)[mask]
        labels[mask] = label
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8), labels


def voc_sample(shape, rng):
    image, labels = render(shape, np.zeros(shape, np.uint8), VOC_CLASSES, rng)
    # VOC marks object outlines with 255 ("difficult" border, ignored by the metric).
    edges = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
    labels[edges] = 255
    return image, labels


def ade_sample(shape, rng):
    h, w = shape
    wave = 6 * np.sin(np.arange(w) / rng.uniform(8, 20))
    horizon = (h * rng.uniform(0.3, 0.6) + wave).astype(int)
    rows = np.arange(h)[:, None]
    background = np.where(rows < horizon[None], 3, 10).astype(np.uint8)
    image, labels = render(shape, background, ADE_THINGS, rng)
    labels[np.abs(rows - horizon[None]) < 2] = 0  # a strip of "other", ignored in training
    return image, labels


def write_voc(root: str, splits: Dict[str, int], shape, rng) -> None:
    for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        os.makedirs(os.path.join(root, sub))
    palette, index = voc_palette(), 0
    for split, count in splits.items():
        names = []
        for _ in range(count):
            name = f'2007_{index:06d}'
            image, labels = voc_sample(shape, rng)
            Image.fromarray(image).save(os.path.join(root, 'JPEGImages', name + '.jpg'), quality=95)
            mask = Image.fromarray(labels, mode='P')
            mask.putpalette(palette)
            mask.save(os.path.join(root, 'SegmentationClass', name + '.png'))
            names.append(name)
            index += 1
        with open(os.path.join(root, 'ImageSets/Segmentation', split + '.txt'), 'w') as f:
            f.write('\n'.join(names) + '\n')


def write_ade(root: str, splits: Dict[str, int], shape, rng) -> None:
    folders = {'train': 'training', 'val': 'validation'}
    for split, count in splits.items():
        kind = folders[split]
        os.makedirs(os.path.join(root, 'images', kind))
        os.makedirs(os.path.join(root, 'annotations', kind))
        for i in range(1, count + 1):
            name = f'ADE_{split}_{i:08d}'
            image, labels = ade_sample(shape, rng)
            image_path = os.path.join(root, 'images', kind, name + '.jpg')
            Image.fromarray(image).save(image_path, quality=95)
            Image.fromarray(labels).save(os.path.join(root, 'annotations', kind, name + '.png'))


def write_atomically(target: str, writer, *args) -> None:
    """Run ``writer(folder, *args)`` in a temporary folder, then move it to ``target``."""
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.partial-', dir=parent)
    try:
        writer(os.path.join(tmp, 'data'), *args)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(os.path.join(tmp, 'data'), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', nargs='?', default='data', help='folder for both datasets')
    parser.add_argument('--format', choices=['voc', 'ade', 'both'], default='both')
    parser.add_argument('--num-train', type=int, default=48)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--size', type=int, nargs=2, default=(168, 224), metavar=('H', 'W'))
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    splits = {'train': args.num_train, 'val': args.num_val}
    shape = tuple(args.size)
    if args.format in ('voc', 'both'):
        root = os.path.join(args.out, 'VOCdevkit', 'VOC2012')
        write_atomically(root, write_voc, splits, shape, np.random.default_rng(args.seed))
        print(f'Pascal VOC layout: {root}')
    if args.format in ('ade', 'both'):
        root = os.path.join(args.out, 'ade', 'ADEChallengeData2016')
        write_atomically(root, write_ade, splits, shape, np.random.default_rng(args.seed + 1))
        print(f'ADE20k layout: {root}')


if __name__ == '__main__':
    main()
