"""The datasets inside dataset wrappers (under ``datasets`` or ``dataset``), as configs and
built, named by their path, e.g. ``train_dataloader.dataset.datasets[1]``."""
from typing import Any, Iterator, Tuple


def _leaves(node: Any, name: str, get) -> Iterator[Tuple[str, Any]]:
    datasets, dataset = get(node, 'datasets'), get(node, 'dataset')
    if isinstance(datasets, (list, tuple)):
        children = [(f'{name}.datasets[{i}]', child) for i, child in enumerate(datasets)]
    else:
        children = [] if dataset is None else [(f'{name}.dataset', dataset)]
    if not children:
        yield name, node
    for child_name, child in children:
        yield from _leaves(child, child_name, get)


def _config_get(node: Any, key: str) -> Any:
    return node.get(key) if isinstance(node, dict) else None


def leaf_configs(dataset_cfg: dict, name: str) -> Iterator[Tuple[str, dict]]:
    """``(name, config)`` of each dataset that reads files in a ``dataset`` entry named
    ``name`` (e.g. ``'train_dataloader.dataset'``), in order; built objects skipped."""
    return ((leaf_name, leaf) for leaf_name, leaf in _leaves(dataset_cfg, name, _config_get)
            if isinstance(leaf, dict))


def leaf_datasets(dataset: Any, name: str) -> Iterator[Tuple[str, Any]]:
    """``(name, dataset)`` of each built dataset that reads files in ``dataset``, named as
    :func:`leaf_configs` names them."""
    return _leaves(dataset, name, lambda node, key: getattr(node, key, None))
