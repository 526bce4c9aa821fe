"""Patch features as colours, by two PCAs, as the DINOv2 and DINOv3 papers show them."""
from typing import List, Sequence, Tuple

import mmcv
import numpy as np
from mmengine.logging import print_log
from sklearn.decomposition import PCA
from sklearn.preprocessing import minmax_scale


def pca_maps(features: Sequence[np.ndarray], threshold: float = 0.5,
             direction: str = 'auto') -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Colour patch features by two PCAs fit over the patches of all images together: the
    first component, scaled to [0, 1], separates foreground (above ``threshold``); a
    3-component PCA of the foreground gives its RGB colours (background black).

    Args:
        features (Sequence[np.ndarray]): ``(h, w, C)`` patch features per image.
        threshold (float): Foreground threshold on the scaled first component, in [0, 1].
        direction (str): Foreground where the first component is high (``'positive'``),
            low (``'negative'``), or whichever leaves most border patches background.

    Returns:
        tuple[list, list]: Per image, the ``(h, w, 3)`` RGB map in [0, 1] and the
        ``(h, w)`` boolean foreground mask.
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
    """RGB uint8: the images in the top row, scaled to ``height``, their maps (nearest
    upsampling to the same size) in the row below."""
    columns = []
    for image, colours in zip(images, maps):
        size = (max(1, round(image.shape[1] * height / image.shape[0])), height)
        colours = (colours * 255).round().astype(np.uint8)
        columns.append(np.concatenate([mmcv.imresize(image, size, interpolation='area'),
                                       mmcv.imresize(colours, size, interpolation='nearest')]))
    return np.concatenate(columns, axis=1)
