"""Reading weight files from outside the project without unpickling code.

Files that do not come from this project's own training (DINOv2 releases, imported
weights, exports) are read with ``torch.load(weights_only=True)`` or safetensors, so a
file that asks to run code while loading is refused.
"""
import os
import pickle
import zipfile
from typing import Dict
from urllib.parse import urlparse

import torch


def is_url(path: str) -> bool:
    return urlparse(str(path)).scheme in ('http', 'https')


def hub_cache_path(url: str) -> str:
    """Where the torch hub cache keeps (or would keep) the file at ``url``."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(urlparse(url).path))


def cached_download(url: str) -> str:
    """Path of ``url`` in the torch hub cache, downloading it there if missing.

    Args:
        url (str): An ``http(s)`` address.

    Raises:
        FileNotFoundError: The file is not cached and cannot be downloaded; the
            message says where to put it.
    """
    cached = hub_cache_path(url)
    if not os.path.isfile(cached):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, cached, progress=True)
        except Exception as error:  # no network, HTTP error, DNS failure ...
            raise FileNotFoundError(
                f'Could not download {url} ({type(error).__name__}: {error}). '
                f'Download it where there is internet and put it at {cached}, '
                f'or pass its local path instead of the URL.') from error
    return cached


def load_weights(path: str, mmap: bool = False) -> Dict[str, torch.Tensor]:
    """Read a state dict of plain tensors from a ``.pth``/``.pt``, ``.safetensors`` file or URL.

    Args:
        path (str): Local file or ``http(s)`` URL (cached in the torch hub folder).
        mmap (bool): Map a ``.pth`` file's tensors from disk instead of reading them
            into memory (pages load as they are used); for a caller that copies them
            anyway, e.g. to another dtype. Files in torch's legacy (non-zip) format
            are read as usual.

    Returns:
        dict[str, torch.Tensor]: The tensors, on the CPU.

    Raises:
        FileNotFoundError: The file does not exist (or cannot be downloaded).
        ValueError: The file is not a flat mapping of names to tensors, or its pickle
            asks to run code; nothing from it is executed.
    """
    path = cached_download(path) if is_url(path) else os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Weight file not found: {path}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        state = load_file(path, device='cpu')
    else:
        try:
            state = torch.load(path, map_location='cpu', weights_only=True,
                               mmap=mmap and zipfile.is_zipfile(path))
        except pickle.UnpicklingError as error:
            raise ValueError(
                f'{path} is not a plain weight file: its pickle asks for objects that '
                f'weights-only loading refuses, so it was not loaded (nothing in it was '
                f'run). Details: {str(error).splitlines()[0]}') from error
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f'{path} does not hold a flat dict of name -> tensor '
                         f'(got {type(state).__name__})')
    return state

