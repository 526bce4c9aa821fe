"""The datasets inside dataset wrappers (under ``datasets`` or ``dataset``), as configs and
built, named by their path, e.g. ``train_dataloader.dataset.datasets[1]``."""
from typing import Any, Iterator, Tuple


def _children(node: Any, name: str, get) -> Iterator[Tuple[str, Any]]:
    datasets = get(node, 'datasets')
    if isinstance(datasets, (list, tuple)):
        for i, child in enumerate(datasets):
            yield f'{name}.datasets[{i}]', child
    elif get(node, 'dataset') is not None:
        yield f'{name}.dataset', get(node, 'dataset')


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
    children = list(_children(dataset_cfg, name, _config_get))
    if not children:
        if isinstance(dataset_cfg, dict):
            yield name, dataset_cfg
    for child_name, child in children:
        yield from leaf_configs(child, child_name)


def leaf_datasets(dataset: Any, name: str) -> Iterator[Tuple[str, Any]]:
    """The built datasets that read files, with the names :func:`leaf_configs` gives.

    Args:
        dataset: A built dataset, wrapper or not.
        name (str): Its name, e.g. ``'train_dataloader.dataset'``.

    Yields:
        tuple[str, BaseDataset]: (name, dataset) of each leaf, in order.
    """
    children = list(_children(dataset, name, lambda node, key: getattr(node, key, None)))
    if not children:
        yield name, dataset
    for child_name, child in children:
        yield from leaf_datasets(child, child_name)
