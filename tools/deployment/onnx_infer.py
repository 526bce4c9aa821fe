"""Segment images with an exported ONNX model and save the predictions painted over them.

    python tools/deployment/onnx_infer.py IMAGE... --model model.onnx --out DIR \
        [--opacity 0.5] [--threads N]

Writes what ``tools/misc/infer.py`` writes (one PNG per image, the palette colour of
each pixel's class blended over it, the class names on their regions), with only
numpy, opencv-python and onnxruntime: no PyTorch, mmcv or mmseg. This file and the
``.onnx`` file are all a machine needs. The classes, palette and preprocessing come
from the model's metadata (``tools/deployment/pytorch2onnx.py`` writes them): each
image is resized as the config's test pipeline resizes it (and, for a model of a fixed
input size, shrunk further if it does not fit), padded, segmented, and the logits are
resized (bilinear) back to the image.
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

INTERPOLATIONS = {'nearest': cv2.INTER_NEAREST, 'bilinear': cv2.INTER_LINEAR,
                  'bicubic': cv2.INTER_CUBIC, 'area': cv2.INTER_AREA,
                  'lanczos': cv2.INTER_LANCZOS4}
METADATA = ('classes', 'palette', 'resize', 'size_divisor', 'pad_value', 'align_corners')


def interpolation_matrix(size_in: int, size_out: int, align_corners: bool) -> np.ndarray:
    """``(size_out, size_in)`` weights of PyTorch's 1-D linear interpolation, float32."""
    out = np.arange(size_out, dtype=np.float64)
    if align_corners:
        src = out * ((size_in - 1) / (size_out - 1)) if size_out > 1 else out * 0
    else:
        src = np.maximum((out + 0.5) * (size_in / size_out) - 0.5, 0)
    low = np.minimum(np.floor(src).astype(int), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    weight = src - low
    matrix = np.zeros((size_out, size_in), np.float64)
    np.add.at(matrix, (np.arange(size_out), low), 1 - weight)
    np.add.at(matrix, (np.arange(size_out), high), weight)
    return matrix.astype(np.float32)


class OnnxSegmentor:
    """An exported segmentor and the preprocessing its metadata describes.

    Args:
        path (str): The ``.onnx`` file.
        threads (int, optional): onnxruntime intra-op threads.
    """

    def __init__(self, path: str, threads: Optional[int] = None):
        import onnxruntime
        if not osp.isfile(path):
            raise FileNotFoundError(f'ONNX model not found: {path}')
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(path, options,
                                                    providers=['CPUExecutionProvider'])
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in METADATA if key not in meta]
        if missing:
            raise ValueError(f'{path} has no {missing} in its metadata: it was not written by '
                             'tools/deployment/pytorch2onnx.py')
        self.meta: Dict = {key: json.loads(meta[key]) for key in METADATA}
        size = self.session.get_inputs()[0].shape[2:]
        self.fixed_size = tuple(size) if all(isinstance(s, int) for s in size) else None

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` resized as the test pipeline's ``Resize`` (mmcv's rule) resizes it, and
        to fit a fixed input size."""
        h, w = rgb.shape[:2]
        resize = self.meta['resize']
        if resize is not None:
            scale_w, scale_h = resize['scale']
            if resize['keep_ratio']:  # long side <= the larger, short side <= the smaller
                factor = min(max(resize['scale']) / max(h, w), min(resize['scale']) / min(h, w))
                size = (int(w * factor + 0.5), int(h * factor + 0.5))
            else:
                size = (scale_w, scale_h)
            rgb = cv2.resize(rgb, size, interpolation=INTERPOLATIONS[resize['interpolation']])
        if self.fixed_size is not None:
            (H, W), (h, w) = self.fixed_size, rgb.shape[:2]
            if h > H or w > W:
                factor = min(H / h, W / w)
                size = (min(int(w * factor + 0.5), W), min(int(h * factor + 0.5), H))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        return rgb

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """The class of each pixel of an ``(H, W, 3)`` uint8 RGB image, ``(H, W)`` int64."""
        resized = self.resize(rgb).astype(np.float32)
        h, w = resized.shape[:2]
        if self.fixed_size is None:
            d = self.meta['size_divisor']
            H, W = -(-h // d) * d, -(-w // d) * d
        else:
            H, W = self.fixed_size
        padded = np.empty((H, W, 3), np.float32)
        padded[:] = self.meta['pad_value']
        padded[:h, :w] = resized
        logits = self.session.run(['logits'], {'image': padded.transpose(2, 0, 1)[None]})[0][0]
        align = self.meta['align_corners']
        rows = interpolation_matrix(h, rgb.shape[0], align)
        cols = interpolation_matrix(w, rgb.shape[1], align)
        logits = np.einsum('oh,chw,pw->cop', rows, logits[:, :h, :w], cols, optimize=True)
        return logits.argmax(0)


def label_position(mask: np.ndarray) -> Tuple[int, int]:
    """``(x, y)`` where a class name goes: the middle of the longest row of its region."""
    ys, xs = np.nonzero(mask)
    rows, counts = np.unique(ys, return_counts=True)
    y = rows[counts.argmax()]
    row = xs[ys == y]
    return int(row[len(row) // 2]), int(y)


def overlay(rgb: np.ndarray, labels: np.ndarray, classes: Sequence[str],
            palette: Sequence[Sequence[int]], opacity: float) -> np.ndarray:
    """The prediction painted over ``rgb`` with class names, drawn as MMSeg's
    ``SegLocalVisualizer`` draws it (same colours, font, sizes and places)."""
    ids = [i for i in np.unique(labels)[::-1] if i < len(classes)]
    colour = np.zeros_like(rgb)
    for i in ids:
        colour[labels == i] = palette[i]
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, min(rgb.shape[:2]) / 500
    thickness = 1 if min(rgb.shape[:2]) < 300 else 2
    for i in ids:
        x, y = label_position(labels == i)
        (width, height), baseline = cv2.getTextSize(classes[i], font, font_scale, thickness)
        corner = (x + width + baseline, y + height + baseline)
        cv2.rectangle(colour, (x, y), corner, tuple(palette[i]), -1)
        cv2.rectangle(colour, (x, y), corner, (0, 0, 0), thickness)
        cv2.putText(colour, classes[i], (x, y + height), font, font_scale, (255, 255, 255),
                    thickness, 2)
    return (rgb * (1 - opacity) + colour * opacity).astype(np.uint8)


def read_images(paths: Sequence[str], out_dir: str) -> List[Tuple[str, str]]:
    """``(image, overlay file)`` pairs, after checking that every image can be read.

    Raises:
        FileNotFoundError: An image does not exist.
        ValueError: An image cannot be decoded, or two would have the same overlay file.
    """
    pairs: Dict[str, str] = {}
    for path in paths:
        if not osp.isfile(path):
            raise FileNotFoundError(f'Image not found: {path}')
        if cv2.imread(path, cv2.IMREAD_COLOR) is None:
            raise ValueError(f'{path}: cannot be decoded as an image')
        out = osp.join(out_dir, osp.splitext(osp.basename(path))[0] + '.png')
        if out in pairs:
            raise ValueError(f'{pairs[out]} and {path} would both be written to {out}')
        pairs[out] = path
    return [(image, out) for out, image in pairs.items()]


def write_png(path: str, rgb: np.ndarray) -> None:
    """Write ``rgb`` as a PNG through a temporary file, so ``path`` is never partial."""
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        ok, encoded = cv2.imencode('.png', np.ascontiguousarray(rgb[..., ::-1]))
        if not ok:
            raise OSError(f'Could not encode an image for {path}')
        with open(tmp, 'wb') as f:
            f.write(encoded.tobytes())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def infer(images: Sequence[str], model: str, out_dir: str, opacity: float = 0.5,
          threads: Optional[int] = None) -> List[str]:
    """Write an overlay of the model's prediction for each image into ``out_dir``.

    Returns:
        list[str]: The written PNG files, in the order of ``images``.
    """
    if not 0 < opacity <= 1:
        raise ValueError(f'opacity must be in (0, 1], got {opacity}')
    pairs = read_images(images, out_dir)
    segmentor = OnnxSegmentor(model, threads)
    os.makedirs(out_dir, exist_ok=True)
    for image, out in pairs:
        rgb = cv2.imread(image, cv2.IMREAD_COLOR)[..., ::-1]
        labels = segmentor(rgb)
        write_png(out, overlay(rgb, labels, segmentor.meta['classes'],
                               segmentor.meta['palette'], opacity))
    return [out for _, out in pairs]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files')
    parser.add_argument('--model', required=True, help='.onnx file of pytorch2onnx.py')
    parser.add_argument('--out', required=True, help='folder for the overlay PNGs')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='opacity of the painted prediction, in (0, 1]')
    parser.add_argument('--threads', type=int, help='onnxruntime intra-op threads')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    outputs = infer(args.images, args.model, args.out, args.opacity, args.threads)
    print(f'{len(outputs)} overlays written to {args.out}')


if __name__ == '__main__':
    main()
