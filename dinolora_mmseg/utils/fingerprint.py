"""Fingerprints of weight files, to tell whether two files hold the same weights."""
import os
from functools import lru_cache
from typing import Tuple

from .integrity import content_fingerprint


def file_fingerprint(path: str) -> str:
    """:func:`~.integrity.content_fingerprint` of the file at ``path``, computed once per
    file and process: cached by real path, inode, size and modification time, so a file
    changed or replaced at the same path is fingerprinted again.

    Cheap for zip-format torch files and this project's ``.safetensors`` (from the
    checksums they store); other files are hashed whole, once.

    Args:
        path (str): The file.
    """
    stat = os.stat(path)
    return _cached(os.path.realpath(path), (stat.st_ino, stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=64)
def _cached(path: str, version: Tuple[int, int, int]) -> str:
    return content_fingerprint(path)
