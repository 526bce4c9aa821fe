"""Fingerprints of weights, to tell whether two sets of tensors are the same."""
import hashlib
from typing import Mapping

import torch


def tensor_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of names, dtypes, shapes and bytes of the tensors in ``state``.

    The same tensors give the same fingerprint whatever file format or key order
    they came in.

    Args:
        state (Mapping[str, torch.Tensor]): Tensors by name.

    Returns:
        str: The hex digest.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f'{key}|{tensor.dtype}|{tuple(tensor.shape)}|'.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
