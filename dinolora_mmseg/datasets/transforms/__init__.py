from .check_seg_map import CheckSegMap
from .image_corruption import (CORRUPTION_FAMILIES, CORRUPTIONS, EXTRA_CORRUPTIONS,
                               IMAGENET_C_CORRUPTIONS, SEVERITIES, ImageCorruption)

__all__ = [
    'CORRUPTION_FAMILIES', 'CORRUPTIONS', 'EXTRA_CORRUPTIONS', 'IMAGENET_C_CORRUPTIONS',
    'SEVERITIES', 'CheckSegMap', 'ImageCorruption'
]
