"""What is wrong with an image file, and its size as the dataset's loader will give it,
read from the header without decoding the pixels."""
import os
from dataclasses import dataclass
from typing import NamedTuple, Optional

import mmcv
from PIL import Image

JPEG_START, JPEG_END = b'\xff\xd8', b'\xff\xd9'
PNG_START, PNG_END = b'\x89PNG\r\n\x1a\n', b'IEND\xaeB`\x82'
EXIF_ORIENTATION = 0x0112
SIDEWAYS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class UnreadableFile(Exception):
    """A file the pipeline cannot read as it should; the message says why (not where)."""


@dataclass(frozen=True)
class ImageLoader:
    """How a pipeline's ``LoadImageFromFile`` decodes images.

    Args:
        flag (str): Its ``color_type``.
        backend (str): Its ``imdecode_backend``.
    """
    flag: str = 'color'
    backend: str = 'cv2'

    @property
    def applies_exif_orientation(self) -> bool:
        """``mmcv.imfrombytes`` turns images by their EXIF orientation with the cv2 and
        pillow backends for the 'color' and 'grayscale' flags, never otherwise."""
        return self.flag in ('color', 'grayscale') and self.backend in ('cv2', 'pillow')

    def decode(self, path: str):
        """The image as the loader decodes it (None if it cannot)."""
        with open(path, 'rb') as f:
            return mmcv.imfrombytes(f.read(), flag=self.flag, backend=self.backend)


class ImageSize(NamedTuple):
    height: int
    width: int
    exif_turned: bool  # whether the loader swaps width and height by the EXIF orientation


def file_problem(path: str) -> Optional[str]:
    """What is wrong with the bytes of ``path`` that shows without decoding: an empty
    file, or a JPEG or PNG cut short (OpenCV decodes such files in part and fills the
    rest with grey). None if nothing is."""
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
    """The size of the image ``loader`` decodes from ``path``, EXIF orientation applied
    as the loader applies it.

    Raises:
        UnreadableFile: The file is empty, truncated or not an image the loader decodes.
    """
    problem = file_problem(path)
    if problem:
        raise UnreadableFile(problem)
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = (loader.applies_exif_orientation
                      and image.getexif().get(EXIF_ORIENTATION) in SIDEWAYS)
    except Exception:  # a format Pillow does not know: ask the loader itself
        try:
            decoded = loader.decode(path)
        except Exception as error:
            raise UnreadableFile(f'cannot be decoded as an image ({error})') from None
        if decoded is None:
            raise UnreadableFile(f'cannot be decoded as an image ({loader.backend})')
        return ImageSize(*decoded.shape[:2], exif_turned=False)
    return ImageSize(width, height, True) if turned else ImageSize(height, width, False)


def check_image_file(path: str, loader: ImageLoader = ImageLoader()) -> ImageSize:
    """Fail unless ``path`` is an image file ``loader`` reads whole.

    Returns:
        ImageSize: Its size as decoded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: It is empty, truncated or undecodable; the message says which.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Image not found: {path}')
    try:
        return image_size(path, loader)
    except UnreadableFile as problem:
        raise ValueError(f'{path}: {problem}') from None
