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
    """The configs of the datasets that read files, with their names.

    Args:
        dataset_cfg (dict): A ``dataset`` entry of a dataloader, wrapper or not.
        name (str): Its name, e.g. ``'train_dataloader.dataset'``.

    Yields:
        tuple[str, dict]: (name, config) of each leaf, in order (built objects skipped).
    """
    return ((leaf_name, leaf) for leaf_name, leaf in _leaves(dataset_cfg, name, _config_get)
            if isinstance(leaf, dict))


def leaf_datasets(dataset: Any, name: str) -> Iterator[Tuple[str, Any]]:
    """The built datasets that read files, with the names :func:`leaf_configs` gives.

    Args:
        dataset: A built dataset, wrapper or not.
        name (str): Its name, e.g. ``'train_dataloader.dataset'``.

    Yields:
        tuple[str, BaseDataset]: (name, dataset) of each leaf, in order.
    """
    return _leaves(dataset, name, lambda node, key: getattr(node, key, None))
