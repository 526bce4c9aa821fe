"""What is wrong with an image file, and its size as the dataset's loader will give it,
read from the header without decoding the pixels."""
import os
from dataclasses import dataclass
from typing import NamedTuple, Optional

import mmcv
import numpy as np
from PIL import Image

JPEG_START, JPEG_END = b'\xff\xd8', b'\xff\xd9'
PNG_START, PNG_END = b'\x89PNG\r\n\x1a\n', b'IEND\xaeB`\x82'
EXIF_ORIENTATION = 0x0112
SIDEWAYS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class UnreadableFile(Exception):
    """A file the pipeline cannot read as it should; the message says why, not where."""


@dataclass(frozen=True)
class ImageLoader:
    """How a pipeline's ``LoadImageFromFile`` decodes images: its ``color_type`` (``flag``)
    and ``imdecode_backend``."""
    flag: str = 'color'
    backend: str = 'cv2'

    @property
    def applies_exif_orientation(self) -> bool:
        """Whether ``mmcv.imfrombytes`` turns images by their EXIF orientation."""
        return self.flag in ('color', 'grayscale') and self.backend in ('cv2', 'pillow')

    def decode(self, path: str) -> np.ndarray:
        """The image as the loader decodes it; UnreadableFile if it is empty, truncated or
        does not decode."""
        problem = file_problem(path)
        if problem:
            raise UnreadableFile(problem)
        with open(path, 'rb') as f:
            content = f.read()
        try:
            image = mmcv.imfrombytes(content, flag=self.flag, backend=self.backend)
        except Exception as error:
            raise UnreadableFile(f'cannot be decoded as an image ({error})') from None
        if image is None:
            raise UnreadableFile(f'cannot be decoded as an image ({self.backend})')
        return image


class ImageSize(NamedTuple):
    height: int
    width: int
    exif_turned: bool  # whether the loader swaps width and height by the EXIF orientation


def file_problem(path: str) -> Optional[str]:
    """An empty file, or a JPEG or PNG cut short (OpenCV decodes such files in part and
    fills the rest with grey); None if the bytes show neither."""
    size = os.path.getsize(path)
    if size == 0:
        return 'empty file (0 bytes)'
    with open(path, 'rb') as f:
        start = f.read(len(PNG_START))
        f.seek(max(size - 1024, 0))
        tail = f.read()
    if start.startswith(JPEG_START) and JPEG_END not in tail:
        return 'corrupt or truncated JPEG (no end-of-image marker)'
    if start == PNG_START and not tail.endswith(PNG_END):
        return 'truncated PNG (no IEND chunk at the end)'
    return None


def image_size(path: str, loader: ImageLoader) -> ImageSize:
    """The size of the image ``loader`` decodes from ``path``, turned by its EXIF
    orientation as the loader turns it (errors of :meth:`ImageLoader.decode`)."""
    problem = file_problem(path)
    if problem:
        raise UnreadableFile(problem)
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = (loader.applies_exif_orientation
                      and image.getexif().get(EXIF_ORIENTATION) in SIDEWAYS)
    except Exception:  # a format Pillow does not know: ask the loader itself
        return ImageSize(*loader.decode(path).shape[:2], exif_turned=False)
    return ImageSize(width, height, True) if turned else ImageSize(height, width, False)


def read_image_file(path: str, loader: ImageLoader = ImageLoader()) -> np.ndarray:
    """The image at ``path`` as ``loader`` decodes it (BGR by default); FileNotFoundError
    if it is missing, ValueError naming it if it is empty, truncated or undecodable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Image not found: {path}')
    try:
        return loader.decode(path)
    except UnreadableFile as problem:
        raise ValueError(f'{path}: {problem}') from None
