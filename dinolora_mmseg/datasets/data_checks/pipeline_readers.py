"""How a dataset's pipeline reads its files: its ``LoadImageFromFile`` and
``LoadAnnotations`` steps, with the dataset's classes and label settings."""
from typing import Optional, Tuple

import mmcv
from mmcv.transforms import LoadImageFromFile
from mmseg.datasets.transforms import LoadAnnotations

from .image_file import ImageLoader
from .label_file import LabelRules


def pipeline_readers(dataset, name: str) -> Tuple[Optional[ImageLoader], Optional[LabelRules]]:
    """The image loader and label rules of the ``LoadImageFromFile`` and
    ``LoadAnnotations`` of a built dataset's pipeline (None for each it lacks);
    ValueError naming ``name`` if ``LoadAnnotations`` sets ``reduce_zero_label`` unlike
    the dataset."""
    loader = rules = None
    for step in getattr(getattr(dataset, 'pipeline', None), 'transforms', []):
        if type(step) is LoadImageFromFile and loader is None:
            loader = ImageLoader(step.color_type,
                                 step.imdecode_backend or mmcv.image.io.imread_backend)
        if type(step) is LoadAnnotations and rules is None:
            classes = dataset.metainfo.get('classes')
            reduce_zero_label = getattr(dataset, 'reduce_zero_label', False)
            if step.reduce_zero_label not in (None, reduce_zero_label):
                raise ValueError(
                    f'{name}: LoadAnnotations(reduce_zero_label={step.reduce_zero_label}) '
                    f'but the dataset has reduce_zero_label={reduce_zero_label}; set it on '
                    'the dataset only')
            if classes:
                rules = LabelRules(
                    num_classes=len(classes),
                    ignore_index=getattr(dataset, 'ignore_index', 255),
                    reduce_zero_label=reduce_zero_label,
                    label_map=tuple(sorted((getattr(dataset, 'label_map', None) or {}).items())),
                    backend=step.imdecode_backend or mmcv.image.io.imread_backend)
    return loader, rules
