"""Reading weight files from outside the project without unpickling code.

Files that do not come from this project's own training (DINOv2 releases, imported
weights, exports) are read with ``torch.load(weights_only=True)`` or safetensors, so a
file that asks to run code while loading is refused; a damaged file is refused too.
"""
import os
import pickle
from typing import Dict, Sequence
from urllib.parse import urlparse

import torch
import torch.distributed as dist
from mmengine.logging import print_log

from .checkpoint_file import torch_load_checked
from .integrity import verify_safetensors

WRAPPERS = ('state_dict', 'model', 'teacher')
FRAMEWORK_PREFIXES = ('module.', 'teacher.', 'backbone.')


def is_url(path: str) -> bool:
    return urlparse(str(path)).scheme in ('http', 'https')


def hub_cache_path(url: str) -> str:
    """Where the torch hub cache keeps (or would keep) the file at ``url``."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(urlparse(url).path))


LOCAL_RANK_VARIABLES = ('LOCAL_RANK', 'SLURM_LOCALID', 'OMPI_COMM_WORLD_LOCAL_RANK')


def local_rank() -> int:
    """This process's rank on its machine, as torchrun, slurm or Open MPI set it (0 if
    none does)."""
    return next((int(os.environ[name]) for name in LOCAL_RANK_VARIABLES if name in os.environ),
                0)


def cached_download(url: str) -> str:
    """Path of ``url`` in the torch hub cache, downloading it there if missing.

    In a multi-process run only local rank 0 of each machine downloads; the others wait
    at a barrier of the default process group (when one exists) and then read the
    cached file, as MMEngine's ``load_from_http`` does.

    Args:
        url (str): An ``http(s)`` address.

    Raises:
        FileNotFoundError: The file is not cached and cannot be downloaded; the
            message says where to put it.
    """
    cached = hub_cache_path(url)
    grouped = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    failed = None
    if not os.path.isfile(cached) and (local_rank() == 0 or not grouped):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, cached, progress=True)
        except Exception as error:  # no network, HTTP error, DNS failure ...
            failed = error  # raised after the barrier, which every rank must reach
    if grouped:
        dist.barrier()
    if failed is not None or not os.path.isfile(cached):
        reason = (f'{type(failed).__name__}: {failed}' if failed is not None
                  else 'local rank 0 could not download it')
        raise FileNotFoundError(
            f'Could not download {url} ({reason}). '
            f'Download it where there is internet and put it at {cached}, '
            f'or pass its local path instead of the URL.') from failed
    return cached


def load_weights(path: str, prefixes: Sequence[str] = FRAMEWORK_PREFIXES,
                 mmap: bool = False) -> Dict[str, torch.Tensor]:
    """Read a state dict of plain tensors from a ``.pth``/``.pt``, ``.safetensors`` file or URL.

    The file is checked for damage first (see :mod:`.integrity`). A file saved by a
    training framework is unwrapped: the tensors under ``state_dict``, ``model`` or
    ``teacher`` are taken, and then, for each of ``prefixes`` that some keys start
    with, only those keys, without it. What was unwrapped is logged.

    Args:
        path (str): Local file or ``http(s)`` URL (cached in the torch hub folder).
        prefixes (Sequence[str]): Key prefixes to select and strip, in this order.
            Defaults to ``('module.', 'teacher.', 'backbone.')``.
        mmap (bool): Map a ``.pth`` file's tensors from disk instead of reading them
            into memory (pages load as they are used); for a caller that copies them
            anyway, e.g. to another dtype. Files in torch's legacy (non-zip) format
            are read as usual.

    Returns:
        dict[str, torch.Tensor]: The tensors, on the CPU.

    Raises:
        FileNotFoundError: The file does not exist (or cannot be downloaded).
        RuntimeError: The file is damaged; the message names it.
        ValueError: The file holds no mapping of names to tensors (the message says
            where it found tensors), is not what its name says, or its pickle asks to
            run code; nothing from it is executed.
    """
    path = cached_download(path) if is_url(path) else os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Weight file not found: {path}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        verify_safetensors(path)
        state = load_file(path, device='cpu')
    else:
        try:
            state = torch_load_checked(path, mmap=mmap)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f'{path} is not a plain weight file: its pickle asks for objects that '
                f'weights-only loading refuses, so it was not loaded (nothing in it was '
                f'run). Details: {str(error).splitlines()[0]}') from error
    return _unwrap(state, path, prefixes)


def _is_flat(state) -> bool:
    return isinstance(state, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def _tensor_places(obj, place: str = '', depth: int = 0) -> Dict[str, int]:
    """How many tensors each dict or list in ``obj`` holds directly, by place (4 levels)."""
    items = list(obj.items() if isinstance(obj, dict) else enumerate(obj))
    direct = sum(isinstance(value, torch.Tensor) for _, value in items)
    counts = {place or '<top level>': direct} if direct else {}
    for key, value in items:
        if isinstance(value, (dict, list, tuple)) and depth < 4:
            counts.update(_tensor_places(value, f'{place}.{key}' if place else str(key),
                                         depth + 1))
    return counts


def _unwrap(state, path: str, prefixes: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The flat name -> tensor dict inside ``state`` (see :func:`load_weights`)."""
    while isinstance(state, dict) and not _is_flat(state):
        wrapper = next((k for k in WRAPPERS if isinstance(state.get(k), dict)), None)
        if wrapper is None:
            places = ', '.join(f"'{where}' ({count})" for where, count in
                               sorted(_tensor_places(state).items())[:8]) or 'nowhere'
            raise ValueError(f'{path} does not hold a flat dict of name -> tensor, at the top '
                             f'or under {list(WRAPPERS)}; tensors were found under: {places}')
        others = sorted(str(k) for k in state if k != wrapper)
        print_log(f'{path}: using the tensors under {wrapper!r}'
                  + (f' (ignoring {others})' if others else ''), logger='current')
        state = state[wrapper]
    if not _is_flat(state):
        raise ValueError(f'{path} does not hold a flat dict of name -> tensor '
                         f'(got {type(state).__name__})')
    for prefix in prefixes:
        kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if kept:
            dropped = sorted({k.split('.')[0] for k in state if not k.startswith(prefix)})
            print_log(f'{path}: using the {len(kept)} tensors named {prefix}*, without that '
                      f'prefix' + (f' (ignoring those under {dropped})' if dropped else ''),
                      logger='current')
            state = kept
    return state
