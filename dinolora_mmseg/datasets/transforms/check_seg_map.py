from typing import Dict

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CheckSegMap(BaseTransform):
    """Fail on label values that are neither a class nor the ignore index.

    Placed after ``LoadAnnotations``; samples without a label map pass. It guards the
    runs without the tools' pre-run scan (docs/reliability.md).

    Args:
        num_classes (int): Classes are ``0 .. num_classes - 1``.
        ignore_index (int): The label of ignored pixels.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: Dict) -> Dict:
        if 'gt_seg_map' not in results:
            return results
        values = np.unique(results['gt_seg_map'])
        bad = values[(values >= self.num_classes) & (values != self.ignore_index)]
        if bad.size:
            raise ValueError(
                f"{results.get('seg_map_path')}: label values {bad.tolist()} are neither "
                f'classes 0..{self.num_classes - 1} nor the ignore index {self.ignore_index}')
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
