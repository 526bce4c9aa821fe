"""Checks of a dataset config before a run, so bad data fails at once with a clear error.

Without them a missing folder, a split file naming a missing image or a truncated JPEG
surfaces deep inside a data-loader worker, or (for a truncated JPEG) not at all: OpenCV
decodes what it can and fills the rest with grey.
"""
import os.path as osp
from typing import Dict

from mmengine.config import ConfigDict
from mmseg.registry import DATASETS

JPEG_START, JPEG_END = b'\xff\xd8', b'\xff\xd9'


def check_jpeg(path: str) -> None:
    """Raise ValueError if ``path`` lacks the JPEG start or end-of-image marker."""
    with open(path, 'rb') as f:
        start = f.read(2)
        f.seek(max(osp.getsize(path) - 1024, 0))
        tail = f.read()
    if start != JPEG_START or JPEG_END not in tail:
        marker = 'start' if start != JPEG_START else 'end-of-image'
        raise ValueError(f'{path} is a corrupt or truncated JPEG (no {marker} marker)')


def check_dataset(dataset_cfg: Dict, name: str) -> int:
    """Check the folders, split file and every listed file of one dataset config.

    Args:
        dataset_cfg (dict): The ``dataset`` entry of a dataloader config.
        name (str): Which dataloader it belongs to, for the messages.

    Returns:
        int: The number of samples.

    Raises:
        FileNotFoundError: ``data_root``, an image/label folder, the split file or a
            listed image/label is missing; the message names it.
        ValueError: A JPEG image is corrupt or truncated.
    """
    cfg = ConfigDict(dataset_cfg)
    root = cfg.get('data_root') or ''
    if root and not osp.isdir(root):
        raise FileNotFoundError(f'{name}: data_root {root!r} does not exist (set data_root in '
                                'the config, or put the dataset there; see the README)')
    for key, folder in cfg.get('data_prefix', {}).items():
        if folder and not osp.isdir(osp.join(root, folder)):
            raise FileNotFoundError(f'{name}: the {key} folder {osp.join(root, folder)!r} is '
                                    f'missing under data_root {root!r}')
    split = cfg.get('ann_file')
    if split and not osp.isfile(osp.join(root, split)):
        raise FileNotFoundError(f'{name}: the split file (ann_file) {osp.join(root, split)!r} '
                                'is missing')
    dataset = DATASETS.build(cfg)
    listed_in = osp.join(root, split) if split else 'the image folder'
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        for key in ('img_path', 'seg_map_path'):
            path = info.get(key)
            if path and not osp.isfile(path):
                raise FileNotFoundError(f'{name}: {path} ({key} of sample {index}, listed in '
                                        f'{listed_in}) does not exist')
        if info['img_path'].lower().endswith(('.jpg', '.jpeg')):
            check_jpeg(info['img_path'])
    return len(dataset)


def check_dataloaders(cfg, names=('train_dataloader', 'val_dataloader')) -> Dict[str, int]:
    """:func:`check_dataset` for the named dataloaders the config has.

    Returns:
        dict: dataloader name -> number of samples.
    """
    return {name: check_dataset(cfg[name]['dataset'], name)
            for name in names if cfg.get(name) is not None}
