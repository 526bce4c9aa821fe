"""Reading checkpoints CRC-checked and weights-only, unpickled in full only when trusted
(nothing here changes how MMEngine or torch load other files)."""
import os
import os.path as osp
import pickle
from collections import OrderedDict
from typing import Dict

import torch
from mmengine.runner import load_state_dict

from .weights import load_weights, local_file, torch_load_checked

TRUST_HINT = ("if you trust this file (a checkpoint of MMSeg's model zoo, say), name it as "
              "trusted: add it to trusted_checkpoints in the config (--cfg-options "
              "trusted_checkpoints=[{path}]) or pass --trust-checkpoint to tools/test.py")
TRUSTED_KEY = 'trusted_checkpoints'


def read_checkpoint(path: str, trusted: bool = False) -> Dict:
    """A checkpoint (``.pth``/``.pt``, or ``.safetensors`` as ``{'state_dict': ...}``).

    A pickle asking for objects that weights-only loading refuses raises a ``ValueError``
    saying how to name the file as trusted (nothing in it runs).

    Args:
        path (str): Local file or ``http(s)`` URL (cached in the torch hub folder).
        trusted (bool): The user named this file as trusted: unpickle it in full.
    """
    local = local_file(path)
    if local.endswith('.safetensors'):
        return {'state_dict': load_weights(local, prefixes=())}
    try:
        return torch_load_checked(local, trusted=trusted)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f'{local} was not loaded: it asks to unpickle objects that weights-only loading '
            f'refuses (nothing in it was run); {TRUST_HINT.format(path=os.fspath(path))}. '
            f'Details: {str(error).splitlines()[0]}') from error


def _normalised(path) -> str:
    return osp.realpath(osp.expanduser(os.fspath(path)))


def is_trusted(cfg, path: str) -> bool:
    """Whether ``path`` is listed in the config's ``trusted_checkpoints`` (a list of paths,
    else ``TypeError``)."""
    listed = cfg.get(TRUSTED_KEY) or []
    if isinstance(listed, (str, os.PathLike)) or not all(
            isinstance(p, (str, os.PathLike)) for p in listed):
        raise TypeError(f'{TRUSTED_KEY} must be a list of checkpoint paths, got {listed!r}')
    return _normalised(path) in {_normalised(p) for p in listed}


def load_into_model(model: torch.nn.Module, checkpoint: Dict, strict: bool,
                    logger=None) -> None:
    """Load a checkpoint's ``state_dict`` (or the checkpoint itself, if it has none) into
    the unwrapped ``model`` as MMEngine does: ``module.`` prefixes dropped, with
    :func:`mmengine.runner.load_state_dict` (which reports to ``logger``)."""
    state_dict = checkpoint.get('state_dict', checkpoint)
    renamed = OrderedDict((k.removeprefix('module.'), v) for k, v in state_dict.items())
    renamed._metadata = getattr(state_dict, '_metadata', OrderedDict())
    load_state_dict(model, renamed, strict=strict, logger=logger)


def load_checkpoint_to_model(model: torch.nn.Module, path: str, strict: bool = True,
                             trusted: bool = False, logger=None) -> Dict:
    """:func:`read_checkpoint`, then :func:`load_into_model`; returns the checkpoint."""
    checkpoint = read_checkpoint(path, trusted=trusted)
    load_into_model(model, checkpoint, strict, logger)
    return checkpoint
