"""A label map read as stored and judged as ``LoadAnnotations`` will use it: one channel of
0..255 that become classes or the ignore index after ``reduce_zero_label`` and ``label_map``."""
from dataclasses import dataclass
from typing import NamedTuple, Tuple

import numpy as np
from PIL import Image

from .image_file import ImageLoader, UnreadableFile


@dataclass(frozen=True)
class LabelRules:
    """How a dataset's pipeline reads label maps (the dataset's settings of these names;
    ``label_map`` as ``(stored, new)`` pairs; ``LoadAnnotations``' ``imdecode_backend``)."""
    num_classes: int
    ignore_index: int = 255
    reduce_zero_label: bool = False
    label_map: Tuple[Tuple[int, int], ...] = ()
    backend: str = 'pillow'

    def lookup(self) -> np.ndarray:
        """Stored value (0..255) -> the value ``LoadAnnotations`` gives the model."""
        values = np.arange(256, dtype=np.uint8)
        if self.reduce_zero_label:
            values[values == 0] = 255
            values = values - 1
            values[values == 254] = 255
        mapped = values.copy()
        for old, new in self.label_map:
            mapped[values == old] = new
        return mapped

    def expected(self) -> str:
        steps = [s for s, on in (('reduce_zero_label', self.reduce_zero_label),
                                 ('label_map', bool(self.label_map))) if on]
        return (f'class indices must be < {self.num_classes} or {self.ignore_index} (ignore)'
                + (f" after {' and '.join(steps)}" if steps else ''))


class LabelStats(NamedTuple):
    height: int
    width: int
    labelled: int  # pixels of a class (neither ignored nor invalid)


def _mode(path: str) -> str:
    try:
        with Image.open(path) as image:
            return image.mode
    except Exception:
        return 'unknown mode'


def _as_stored(path: str, rules: LabelRules) -> np.ndarray:
    label = ImageLoader('unchanged', rules.backend).decode(path)
    if label.ndim == 3 and label.shape[2] > 1:
        mode = _mode(path)
        note = (f"; LoadAnnotations(imdecode_backend='{rules.backend}') reads palette PNGs "
                "as colours, use 'pillow'" if mode == 'P' else '')
        raise UnreadableFile(f'{label.shape[2]}-channel label ({mode}); labels must be one '
                             f'channel of class indices (a palette or greyscale PNG){note}')
    return label


def _to_uint8(label: np.ndarray, rules: LabelRules) -> np.ndarray:
    """``label`` as the uint8 ``LoadAnnotations`` casts it to, if that loses nothing."""
    if label.dtype == np.uint8:
        return label
    kind = f'{8 * label.dtype.itemsize}-bit' + (
        ' floating-point' if label.dtype.kind == 'f' else '')
    if label.dtype.kind == 'f' and not np.array_equal(label, np.round(label)):
        raise UnreadableFile(f'{kind} label with fractional values; {rules.expected()}')
    low, high = label.min(), label.max()
    if high > 255:
        raise UnreadableFile(f'{kind} label with values up to {high:g}; {rules.expected()}')
    if low < 0:
        raise UnreadableFile(f'{kind} label with values down to {low:g}; {rules.expected()}')
    return label.astype(np.uint8)


def label_stats(path: str, rules: LabelRules) -> LabelStats:
    """Size and labelled pixels of the label map at ``path``; UnreadableFile if it is
    empty, truncated, undecodable, not one channel, or holds values of no class."""
    label = _as_stored(path, rules)
    stored = np.bincount(_to_uint8(label, rules).ravel(), minlength=256)
    lookup = rules.lookup()
    used = np.zeros(256, np.int64)
    np.add.at(used, lookup, stored)
    is_class = np.arange(256) < rules.num_classes
    allowed = is_class.copy()
    if 0 <= rules.ignore_index < 256:
        is_class[rules.ignore_index] = False
        allowed[rules.ignore_index] = True
    bad = np.flatnonzero((stored > 0) & ~allowed[lookup])
    if bad.size:
        raise UnreadableFile(f'label values {bad.tolist()}; {rules.expected()}')
    return LabelStats(*label.shape[:2], labelled=int(used[is_class].sum()))
