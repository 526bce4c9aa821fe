"""Reading weight files without unpickling code: CRC-checked, weights-only (or safetensors).
See docs/reliability.md ("Safe loading")."""
import os
import os.path as osp
import pickle
import zipfile
from typing import Dict, Sequence
from urllib.parse import urlparse

import torch
from mmengine.dist import barrier, get_world_size
from mmengine.logging import print_log

from .integrity import verify_safetensors, verify_zip

WRAPPERS = ('state_dict', 'model', 'teacher')
FRAMEWORK_PREFIXES = ('module.', 'teacher.', 'backbone.')
LOCAL_RANK_VARIABLES = ('LOCAL_RANK', 'SLURM_LOCALID', 'OMPI_COMM_WORLD_LOCAL_RANK')


def is_url(path: str) -> bool:
    return urlparse(str(path)).scheme in ('http', 'https')


def hub_cache_path(url: str) -> str:
    """Where the torch hub cache keeps (or would keep) the file at ``url``."""
    return osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(urlparse(url).path))


def local_rank() -> int:
    """This process's rank on its machine, as torchrun, Slurm or Open MPI set it (0 alone)."""
    return next((int(os.environ[name]) for name in LOCAL_RANK_VARIABLES if name in os.environ),
                0)


def cached_download(url: str) -> str:
    """Path of ``url`` in the torch hub cache, downloading it there if missing (else a
    ``FileNotFoundError`` says where to put it).

    In a multi-process run only local rank 0 of each machine downloads; the others wait
    at a barrier of the default process group, as MMEngine's ``load_from_http`` does.
    """
    cached = hub_cache_path(url)
    failed = None
    if not osp.isfile(cached) and (local_rank() == 0 or get_world_size() == 1):
        os.makedirs(osp.dirname(cached), exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, cached, progress=True)
        except Exception as error:  # no network, HTTP error, DNS failure ...
            failed = error  # raised after the barrier
    barrier()  # every rank, also one whose download failed (a no-op in a single process)
    if failed is not None or not osp.isfile(cached):
        reason = (f'{type(failed).__name__}: {failed}' if failed is not None
                  else 'local rank 0 could not download it')
        raise FileNotFoundError(
            f'Could not download {url} ({reason}). Download it where there is internet and '
            f'put it at {cached}, or pass its local path instead of the URL.') from failed
    return cached


def local_file(path: str) -> str:
    """``path`` as a local file that exists: a URL downloaded, ``~`` expanded."""
    path = os.fspath(path)
    path = cached_download(path) if is_url(path) else osp.expanduser(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'Weight file not found: {path}')
    return path


def torch_load_checked(path: str, trusted: bool = False, mmap: bool = False):
    """``torch.load`` of a local file to the CPU after its CRC-32 check, weights-only
    unless ``trusted`` (the user vouches for the file); ``mmap`` maps a zip file's tensors.
    A damaged file raises a ``RuntimeError`` naming it."""
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        verify_zip(path)
    try:
        return torch.load(path, map_location='cpu', weights_only=not trusted,
                          mmap=mmap and is_zip)
    except RuntimeError as error:  # not pickle.UnpicklingError, which is no RuntimeError
        raise RuntimeError(f'{path} is damaged: {error}') from error


def load_weights(path: str, prefixes: Sequence[str] = FRAMEWORK_PREFIXES,
                 mmap: bool = False) -> Dict[str, torch.Tensor]:
    """The CPU tensors, by name, of a ``.pth``/``.pt`` or ``.safetensors`` file or URL.

    A file saved by a training framework is unwrapped, and the log says so: the tensors
    under ``state_dict``, ``model`` or ``teacher``, then, for each of ``prefixes`` that
    some keys start with, only those keys, without it. A file that holds no flat dict of
    tensors (the message says where it found some), is not what its name says, or whose
    pickle asks to run code raises a ``ValueError``.

    Args:
        path (str): Local file or ``http(s)`` URL (cached in the torch hub folder).
        prefixes (Sequence[str]): Key prefixes to select and strip, in this order.
        mmap (bool): Map a zip-format ``.pth`` file's tensors from disk.
    """
    path = local_file(path)
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        verify_safetensors(path)
        return _unwrap(load_file(path, device='cpu'), path, prefixes)
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
