"""What an exported file carries besides its graph: JSON text under each key of its
``metadata_props`` (the keys: docs/deployment.md)."""
import json
import os.path as osp
from typing import Dict, List, Optional

from mmengine.config import Config
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import DATASETS

from ..datasets import leaf_configs

RESIZE_TYPES = ('Resize', 'mmcv.Resize', 'mmseg.Resize')
INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'area', 'lanczos')


def test_resize(cfg: Config) -> Optional[Dict]:
    """The ``Resize`` of the test pipeline of ``cfg`` (its first dataset) as ``{'scale':
    [w, h], 'keep_ratio': bool, 'interpolation': str}``; None without one; ValueError for
    a ``Resize`` by ``scale_factor`` or with an unknown interpolation."""
    _, dataset = next(leaf_configs(cfg.test_dataloader.dataset, 'test_dataloader.dataset'))
    for step in dataset.get('pipeline') or []:
        if step.get('type') not in RESIZE_TYPES:
            continue
        interpolation = step.get('interpolation', 'bilinear')
        if step.get('scale') is None or interpolation not in INTERPOLATIONS:
            raise ValueError(f'{cfg.filename}: the test pipeline resizes with {dict(step)}; '
                             'the deployment tools take a Resize with a scale (w, h) and an '
                             f'interpolation of {list(INTERPOLATIONS)}')
        scale = step['scale']
        scale = [scale, scale] if isinstance(scale, int) else list(scale)
        return dict(scale=scale, keep_ratio=bool(step.get('keep_ratio', False)),
                    interpolation=interpolation)
    return None


def dataset_meta(cfg: Config, meta: Dict, num_classes: int) -> Dict[str, List]:
    """Class names and palette: the checkpoint's ``meta['dataset_meta']``, else the test
    dataset's ``METAINFO``; ValueError unless there are ``num_classes`` of them."""
    info = meta.get('dataset_meta')
    where = 'the checkpoint\'s meta.dataset_meta'
    if not info:
        _, dataset = next(leaf_configs(cfg.test_dataloader.dataset, 'test_dataloader.dataset'))
        info = dict(DATASETS.get(dataset['type']).METAINFO, **(dataset.get('metainfo') or {}))
        where = f'the METAINFO of {dataset["type"]}'
    classes, palette = info.get('classes'), info.get('palette')
    if not classes or not palette or len(classes) != num_classes or len(palette) < num_classes:
        raise ValueError(f'{where} has {len(classes or [])} classes and {len(palette or [])} '
                         f'palette colours; the model predicts {num_classes} classes')
    return dict(classes=list(classes), palette=[list(map(int, c)) for c in palette[:num_classes]])


def input_divisor(model: EncoderDecoder) -> int:
    """The data preprocessor's test-time ``size_divisor``, else the patch size, else 1."""
    test_cfg = getattr(model.data_preprocessor, 'test_cfg', None) or {}
    return int(test_cfg.get('size_divisor') or getattr(model.backbone, 'patch_size', 1))


def pad_colour(model: EncoderDecoder) -> List[float]:
    """The RGB input colour that the data preprocessor's padding amounts to."""
    preprocessor = model.data_preprocessor
    value = float(preprocessor.pad_val)
    if getattr(preprocessor, '_enable_normalize', False):
        colour = (preprocessor.mean.flatten() + value * preprocessor.std.flatten()).tolist()
    else:
        colour = [value] * 3
    return colour if preprocessor.channel_conversion else colour[::-1]


def deploy_metadata(cfg: Config, model: EncoderDecoder, meta: Dict,
                    checkpoint: str) -> Dict[str, str]:
    """The metadata (key -> JSON text) of the file exported from ``model``, built from
    ``cfg``, and the ``meta`` of its ``checkpoint`` file."""
    values = dict(dataset_meta(cfg, meta, model.decode_head.out_channels),
                  resize=test_resize(cfg), size_divisor=input_divisor(model),
                  pad_value=pad_colour(model), align_corners=bool(model.align_corners),
                  source=dict(config=osp.abspath(cfg.filename) if cfg.filename else None,
                              checkpoint=osp.abspath(checkpoint)))
    return {key: json.dumps(value) for key, value in values.items()}
