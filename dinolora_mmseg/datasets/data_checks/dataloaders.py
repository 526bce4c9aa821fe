"""Checks of a config's datasets before a run: bad data fails at once, naming the file and
what is wrong with it (docs/reliability.md says what is checked and why)."""
import copy
import logging
import os
import os.path as osp
from typing import Callable, Dict, List, NamedTuple, Optional, TypeVar

from mmengine.dataset import BaseDataset
from mmengine.dist import broadcast_object_list, get_rank, get_world_size
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmseg.registry import DATASETS

from ..dataset_tree import leaf_configs, leaf_datasets
from .pipeline_readers import pipeline_readers
from .samples import check_samples

MAX_LISTED = 10
SHARED_ERRORS = (FileNotFoundError, ValueError)  # what a check raises about the data
T = TypeVar('T')


def check_layout(cfg: Dict, name: str) -> None:
    """Check the ``data_root``, folders and split file of a dataset config (not a
    wrapper); FileNotFoundError naming one that is missing."""
    root = cfg.get('data_root') or ''
    if root and not osp.isdir(root):
        raise FileNotFoundError(f'{name}: data_root {root!r} does not exist (set data_root in '
                                'the config, or put the dataset there; see the README)')
    for key, folder in (cfg.get('data_prefix') or {}).items():
        if folder and not osp.isdir(osp.join(root, folder)):
            raise FileNotFoundError(f'{name}: the {key} folder {osp.join(root, folder)!r} is '
                                    f'missing under data_root {root!r}')
    split = cfg.get('ann_file')
    if split and not osp.isfile(osp.join(root, split)):
        raise FileNotFoundError(f'{name}: the split file (ann_file) {osp.join(root, split)!r} '
                                'is missing')


def _unserialized(dataset_cfg: Dict) -> Dict:
    """A copy of ``dataset_cfg`` with ``serialize_data=False`` for its datasets: MMEngine's
    serialization runs a full garbage collection per dataset (docs/performance.md)."""
    dataset_cfg = copy.deepcopy(dataset_cfg)
    for _, leaf_cfg in leaf_configs(dataset_cfg, ''):
        dataset_type = leaf_cfg.get('type')
        if isinstance(dataset_type, str):
            dataset_type = DATASETS.get(dataset_type)
        if isinstance(dataset_type, type) and issubclass(dataset_type, BaseDataset):
            leaf_cfg['serialize_data'] = False
    return dataset_cfg


def _listing(lines: List[str]) -> str:
    more = len(lines) - MAX_LISTED
    return '\n'.join(['  ' + line for line in lines[:MAX_LISTED]]
                     + ([f'  ... and {more} more'] if more > 0 else []))


def _sample_paths(dataset, name: str) -> List[tuple]:
    """(image, label) of every sample; FileNotFoundError naming the missing files."""
    paths, missing = [], []
    listed_in = getattr(dataset, 'ann_file', '') or 'the image folder'
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        for key in ('img_path', 'seg_map_path'):
            path = info.get(key)
            if path and not osp.isfile(path):
                missing.append(f'{path} ({key} of sample {index}, listed in {listed_in}) '
                               'does not exist')
        paths.append((info['img_path'], info.get('seg_map_path')))
    if missing:
        raise FileNotFoundError(f'{name}: {len(missing)} listed files do not exist:\n'
                                + _listing(missing))
    return paths


class LeafResult(NamedTuple):
    samples: int
    failure: Optional[str]  # the unusable files, listed; None if there are none
    label_maps: int  # label maps read
    labelled: int  # their labelled pixels


def _log(message: str, level: int = logging.INFO) -> None:
    """Log on the first process only (without a process group every process checks)."""
    if os.environ.get('RANK', '0') == '0':
        print_log(message, logger='current', level=level)


def _check_leaf(dataset, name: str) -> LeafResult:
    """Check the files of every sample of a dataset that reads files."""
    loader, rules = pipeline_readers(dataset, name)
    paths = _sample_paths(dataset, name)
    reports = check_samples(paths, loader, rules)
    problems = [problem for report in reports for problem in report.problems]
    failure = (f'{name}: {sum(1 for report in reports if report.problems)} of {len(paths)} '
               f'samples have unusable files:\n{_listing(problems)}' if problems else None)
    read = [(seg, report.labelled) for (_, seg), report in zip(paths, reports)
            if report.labelled is not None]
    unlabelled = [seg for seg, count in read if count == 0]
    if unlabelled:
        _log(f'{name}: {len(unlabelled)} of {len(read)} label maps have no labelled pixel '
             f'({rules.expected()}), e.g. {unlabelled[0]}', logging.WARNING)
    return LeafResult(len(paths), failure, len(read), sum(count for _, count in read))


def check_dataset(dataset_cfg: Dict, name: str, default_scope: str = 'mmseg') -> int:
    """Check a dataloader's dataset (wrappers too) and every file it lists; its length.

    Args:
        dataset_cfg (dict): The ``dataset`` entry of a dataloader config.
        name (str): Which dataloader it belongs to, for the messages.
        default_scope (str): Registry scope the dataset is built in.

    Raises:
        FileNotFoundError: A folder, the split file or listed files are missing (named).
        ValueError: Unusable images or label maps (each named with what is wrong), or no
            label map has a labelled pixel (a few without are a warning).
    """
    for leaf_name, leaf_cfg in leaf_configs(dataset_cfg, name):
        check_layout(leaf_cfg, leaf_name)
    with DefaultScope.overwrite_default_scope(default_scope):
        dataset = DATASETS.build(_unserialized(dataset_cfg))
    results = [_check_leaf(leaf, leaf_name) for leaf_name, leaf in leaf_datasets(dataset, name)]
    failures = [result.failure for result in results if result.failure]
    if failures:
        raise ValueError('\n'.join(failures))
    label_maps = sum(result.label_maps for result in results)
    if label_maps and not sum(result.labelled for result in results):
        raise ValueError(f'{name}: none of its {label_maps} label maps has a labelled pixel: '
                         'training would learn nothing and mIoU would be nan')
    sizes = [result.samples for result in results]
    parts = f" ({' + '.join(map(str, sizes))} in {len(sizes)} datasets)" if len(sizes) > 1 else ''
    repeats = f', {len(dataset)} with repeats' if len(dataset) != sum(sizes) else ''
    _log(f'{name}: {sum(sizes)} samples checked{parts}{repeats}')
    return len(dataset)


def on_first_rank(check: Callable[[], T]) -> T:
    """Run ``check`` (no argument, a picklable result) on global rank 0 only and give
    every rank its result, or its error: a ``FileNotFoundError`` or ``ValueError`` as
    such, any other as a ``RuntimeError`` naming it."""
    if get_world_size() == 1:
        return check()
    verdict: List[Optional[tuple]] = [None]
    if get_rank() == 0:
        try:
            verdict[0] = ('result', check())
        except Exception as error:  # every rank must hear of it, or they wait forever
            broadcast_object_list([('error', type(error).__name__, str(error))], src=0)
            raise
    broadcast_object_list(verdict, src=0)
    kind, *value = verdict[0]
    if kind == 'result':
        return value[0]
    name, message = value
    shared = {cls.__name__: cls for cls in SHARED_ERRORS}
    if name in shared:
        raise shared[name](message)
    raise RuntimeError(f'the data check failed on rank 0 with {name}: {message}')


def check_dataloaders(cfg, names=('train_dataloader', 'val_dataloader')) -> Dict[str, int]:
    """:func:`check_dataset` for the named dataloaders the config has, on global rank 0
    only (:func:`on_first_rank`); dataloader name -> number of samples, on every rank."""
    scope = cfg.get('default_scope') or 'mmseg'
    return on_first_rank(lambda: {
        name: check_dataset(cfg[name]['dataset'], f'{name}.dataset', scope)
        for name in names if cfg.get(name) is not None})


def check_test_dataloader(cfg, launcher: str) -> int:
    """:func:`check_dataloaders` for ``test_dataloader`` (the number of test images),
    refusing more processes than test images (``WORLD_SIZE``, unless ``launcher`` is
    ``'none'``)."""
    num_images = check_dataloaders(cfg, ['test_dataloader'])['test_dataloader']
    processes = int(os.environ.get('WORLD_SIZE', 1)) if launcher != 'none' else 1
    if processes > num_images:
        raise ValueError(f'{processes} processes for {num_images} test images: each process '
                         'needs at least one; start fewer')
    return num_images
