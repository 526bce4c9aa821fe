"""Reading checkpoint files without running code from them.

Every checkpoint the project's tools read goes through :func:`read_checkpoint`: the file
is checked for damage first (:func:`~.integrity.verify_zip`), then read with
``torch.load(weights_only=True)``, so a file whose pickle asks to create objects is
refused and nothing in it runs. A file the user trusts, named as such
(``trusted_checkpoints`` in the config, ``tools/test.py --trust-checkpoint``), is
unpickled in full. Nothing here changes how MMEngine or torch load other files.
"""
import os
import os.path as osp
import pickle
import zipfile
from typing import Dict

import torch

from .integrity import verify_zip

TRUST_HINT = ("if you trust this file (a checkpoint of MMSeg's model zoo, say), name it as "
              "trusted: add it to trusted_checkpoints in the config (--cfg-options "
              "\"trusted_checkpoints=['{path}']\") or pass --trust-checkpoint to tools/test.py")


def torch_load_checked(path: str, trusted: bool = False, mmap: bool = False,
                       map_location='cpu'):
    """``torch.load`` of a local file after its CRC-32 check, weights-only unless ``trusted``.

    Args:
        path (str): The file.
        trusted (bool): Unpickle everything (the user vouches for the file).
        mmap (bool): Map a zip-format file's tensors from disk.
        map_location: As for :func:`torch.load`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RuntimeError: The file is damaged; the message names it.
        pickle.UnpicklingError: The pickle asks for objects weights-only loading refuses.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        verify_zip(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted,
                          mmap=mmap and is_zip)
    except pickle.UnpicklingError:
        raise
    except RuntimeError as error:
        raise RuntimeError(f'{path} is damaged: {error}') from error


def read_checkpoint(path: str, map_location='cpu', trusted: bool = False) -> Dict:
    """A checkpoint (``.pth``/``.pt``, or ``.safetensors`` as ``{'state_dict': ...}``).

    Args:
        path (str): Local file.
        map_location: As for :func:`torch.load`.
        trusted (bool): The user named this file as trusted: unpickle it in full.

    Returns:
        dict: What the file holds.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RuntimeError: The file is damaged.
        ValueError: Its pickle asks for objects that weights-only loading refuses
            (nothing was run); the message says how to name the file as trusted.
    """
    path = osp.expanduser(os.fspath(path))
    if path.endswith('.safetensors'):
        from .weights import load_weights
        return {'state_dict': load_weights(path, prefixes=())}
    try:
        return torch_load_checked(path, trusted=trusted, map_location=map_location)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f'{path} was not loaded: it asks to unpickle objects that weights-only loading '
            f'refuses (nothing in it was run); {TRUST_HINT.format(path=path)}. Details: '
            f'{str(error).splitlines()[0]}') from error
