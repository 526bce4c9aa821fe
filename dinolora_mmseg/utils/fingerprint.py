"""Fingerprints of weights, to tell whether two sets of tensors are the same, and records
of them that travel inside state dicts."""
import hashlib
import json
from typing import Dict, Mapping, Optional

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


def encode_record(record: Dict[str, Optional[str]]) -> torch.Tensor:
    """``record`` as a uint8 tensor of its JSON text, so that state dicts stay made of
    tensors (MMEngine broadcasts every entry of one as a tensor).

    Args:
        record (dict): String values by name.
    """
    return torch.frombuffer(bytearray(json.dumps(record, sort_keys=True).encode()),
                            dtype=torch.uint8)


def decode_record(value: Optional[torch.Tensor]) -> Dict[str, Optional[str]]:
    """The dict :func:`encode_record` encoded; empty for None.

    Args:
        value (torch.Tensor, optional): A uint8 tensor from :func:`encode_record`.
    """
    if value is None:
        return {}
    return json.loads(value.cpu().numpy().tobytes().decode())
