"""The ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) as a test-time transform."""
import numbers
import os.path as osp
import zlib
from typing import Optional

import mmcv
import numpy as np
from imagecorruptions import corruption_dict
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from PIL import Image

# The 15 corruptions of the ImageNet-C benchmark, in the order of its paper.
IMAGENET_C_CORRUPTIONS = ('gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur',
                          'glass_blur', 'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog',
                          'brightness', 'contrast', 'elastic_transform', 'pixelate',
                          'jpeg_compression')
# The 4 held-out ("validation") corruptions that come with ImageNet-C.
EXTRA_CORRUPTIONS = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')
CORRUPTIONS = IMAGENET_C_CORRUPTIONS + EXTRA_CORRUPTIONS
CORRUPTION_FAMILIES = {
    'noise': ('gaussian_noise', 'shot_noise', 'impulse_noise', 'speckle_noise'),
    'blur': ('defocus_blur', 'glass_blur', 'motion_blur', 'zoom_blur', 'gaussian_blur'),
    'weather': ('snow', 'frost', 'fog', 'brightness', 'spatter'),
    'digital': ('contrast', 'elastic_transform', 'pixelate', 'jpeg_compression', 'saturate'),
}
SEVERITIES = (1, 2, 3, 4, 5)
# imagecorruptions' two corruptions that draw from their own generators (seeded by
# ``seed=``); all others draw from numpy's global random state.
_OWN_GENERATOR = ('impulse_noise', 'glass_blur')
# imagecorruptions.corrupt() refuses images under 32 px; its corruption functions, called
# directly here, work on images of any size, pixelate (shrinks up to 4x) from 4 px on.
MIN_SIZE = 4


@TRANSFORMS.register_module()
class ImageCorruption(BaseTransform):
    """Corrupt ``results['img']`` with an ImageNet-C corruption at severity 1 to 5.

    Put it right after ``LoadImageFromFile`` in a test pipeline (docs/robustness.md).
    BGR is corrupted as RGB, grey as its RGB copy. Each image's random numbers come from
    a CRC-32 of ``seed``, its file name (else its bytes), ``corruption`` and ``severity``:
    the same pixels in every run and process. Numpy's global random state is restored.

    Args:
        corruption (str): One of :data:`CORRUPTIONS`. Defaults to 'gaussian_noise'.
        severity (int): 1 (mild) to 5 (strong). Defaults to 3.
        seed (int, optional): Base seed of the per-image seeds; None means 0.
    """

    def __init__(self, corruption: str = 'gaussian_noise', severity: int = 3,
                 seed: Optional[int] = None):
        if corruption not in CORRUPTIONS:
            raise ValueError(f'unknown corruption {corruption!r}; valid: {", ".join(CORRUPTIONS)}')
        if (isinstance(severity, bool) or not isinstance(severity, numbers.Integral)
                or severity not in SEVERITIES):
            raise ValueError(f'severity must be an int in {SEVERITIES}, got {severity!r}')
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f'seed must be an int or None, got {seed!r}')
        self.corruption = corruption
        self.severity = int(severity)
        self.seed = 0 if seed is None else int(seed)

    def image_seed(self, results: dict) -> int:
        """The 32-bit seed of the image in ``results``."""
        path = results.get('img_path')
        if path is not None:
            key = osp.basename(path)
        else:
            img = np.ascontiguousarray(results['img'])
            key = f'{img.shape}:{zlib.crc32(img.tobytes())}'
        return zlib.crc32(f'{self.seed}|{key}|{self.corruption}|{self.severity}'.encode())

    def corrupt(self, rgb: np.ndarray, seed: int) -> np.ndarray:
        """Corrupt an RGB uint8 image with the given seed; numpy's global state is kept."""
        kwargs = dict(seed=seed) if self.corruption in _OWN_GENERATOR else {}
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            out = corruption_dict[self.corruption](Image.fromarray(rgb), self.severity, **kwargs)
        finally:
            np.random.set_state(state)
        return np.uint8(out)  # truncation, as imagecorruptions and ImageNet-C do

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.dtype != np.uint8 or not (img.ndim == 2 or img.ndim == 3 and img.shape[2] == 3):
            raise ValueError(f'{self.__class__.__name__} needs a uint8 BGR (H, W, 3) or grey '
                             f'(H, W) image, got {img.dtype} {img.shape}; put it right after '
                             'LoadImageFromFile (to_float32=False)')
        if min(img.shape[:2]) < MIN_SIZE:
            raise ValueError(f'{self.__class__.__name__} needs images of at least '
                             f'{MIN_SIZE}x{MIN_SIZE} pixels, got {img.shape[:2]}')
        seed = self.image_seed(results)
        if img.ndim == 2:
            results['img'] = mmcv.rgb2gray(self.corrupt(mmcv.gray2rgb(img), seed))
        else:
            results['img'] = mmcv.rgb2bgr(self.corrupt(mmcv.bgr2rgb(img), seed))
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(corruption={self.corruption!r}, '
                f'severity={self.severity}, seed={self.seed})')
