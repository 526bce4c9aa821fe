"""Reading checkpoint files without running code from them.

Every checkpoint the project's tools read goes through :func:`read_checkpoint`: the file
is checked for damage first (:func:`~.integrity.verify_zip`), then read with
``torch.load(weights_only=True)``, so a file whose pickle asks to create objects is
refused and nothing in it runs. A file the user trusts, named as such
(``trusted_checkpoints`` in the config, :func:`is_trusted`; ``tools/test.py
--trust-checkpoint``), is unpickled in full. Nothing here changes how MMEngine or torch
load other files.
"""
import os
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Dict

import torch
from mmengine.runner import load_state_dict

from .integrity import verify_zip

TRUST_HINT = ("if you trust this file (a checkpoint of MMSeg's model zoo, say), name it as "
              "trusted: add it to trusted_checkpoints in the config (--cfg-options "
              "trusted_checkpoints=[{path}]) or pass --trust-checkpoint to tools/test.py")
TRUSTED_KEY = 'trusted_checkpoints'


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
        path (str): Local file or ``http(s)`` URL (cached in the torch hub folder, as
            MMEngine caches it).
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
    from .weights import cached_download, is_url, load_weights  # weights imports this module
    named = os.fspath(path)
    path = cached_download(named) if is_url(named) else osp.expanduser(named)
    if path.endswith('.safetensors'):
        return {'state_dict': load_weights(path, prefixes=())}
    try:
        return torch_load_checked(path, trusted=trusted, map_location=map_location)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f'{path} was not loaded: it asks to unpickle objects that weights-only loading '
            f'refuses (nothing in it was run); {TRUST_HINT.format(path=named)}. Details: '
            f'{str(error).splitlines()[0]}') from error


def _normalised(path) -> str:
    return osp.realpath(osp.expanduser(os.fspath(path)))


def is_trusted(cfg, path: str) -> bool:
    """Whether ``path`` is listed in the config's ``trusted_checkpoints``.

    Args:
        cfg (Config): The config.
        path (str): A checkpoint file.

    Raises:
        TypeError: ``trusted_checkpoints`` is not a list of paths.
    """
    listed = cfg.get(TRUSTED_KEY) or []
    if isinstance(listed, (str, os.PathLike)) or not all(
            isinstance(p, (str, os.PathLike)) for p in listed):
        raise TypeError(f'{TRUSTED_KEY} must be a list of checkpoint paths, got {listed!r}')
    return _normalised(path) in {_normalised(p) for p in listed}


def load_into_model(model: torch.nn.Module, checkpoint: Dict, strict: bool,
                    logger=None) -> None:
    """Load a checkpoint's ``state_dict`` (or the checkpoint itself, if it has none) into
    ``model`` as MMEngine does: ``module.`` prefixes dropped, with
    :func:`mmengine.runner.load_state_dict`.

    Args:
        model (nn.Module): The model, not wrapped (DDP...).
        checkpoint (dict): What :func:`read_checkpoint` returned.
        strict (bool): Refuse missing and unexpected keys.
        logger: Where MMEngine reports them when not ``strict``.
    """
    state_dict = checkpoint.get('state_dict', checkpoint)
    metadata = getattr(state_dict, '_metadata', OrderedDict())
    state_dict = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in state_dict.items())
    state_dict._metadata = metadata
    load_state_dict(model, state_dict, strict=strict, logger=logger)


def load_checkpoint_to_model(model: torch.nn.Module, path: str, strict: bool = True,
                             trusted: bool = False, logger=None) -> Dict:
    """:func:`read_checkpoint`, then :func:`load_into_model`.

    Args:
        model (nn.Module): The model, not wrapped.
        path (str): Local checkpoint file.
        strict (bool): Refuse missing and unexpected keys.
        trusted (bool): The user named the file as trusted: unpickle it in full.
        logger: As for :func:`load_into_model`.

    Returns:
        dict: The checkpoint.
    """
    checkpoint = read_checkpoint(path, map_location='cpu', trusted=trusted)
    load_into_model(model, checkpoint, strict, logger)
    return checkpoint
