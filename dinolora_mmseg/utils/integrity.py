"""Damaged weight files found by their CRC-32s (which ``torch.load`` does not check; ours
add one to ``.safetensors``), and fingerprints of weight files' content."""
import hashlib
import json
import os
import zipfile
import zlib
from functools import lru_cache
from typing import Dict, Iterator, Optional, Tuple

import torch

CRC_KEY = 'data_crc32'


def verify_zip(path: str) -> None:
    """Check every record of a zip-format torch file against its stored CRC-32 (one saved
    with ``torch.serialization.set_crc32_options(False)`` stores 0: not checked); a damaged
    or incomplete file raises a ``RuntimeError`` naming it and the record."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0 and info.file_size:
                    continue  # saved without checksums
                with archive.open(info) as record:  # raises at the end if the CRC differs
                    while record.read(1 << 24):
                        pass
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise RuntimeError(f'{path} is damaged or not a zip-format torch file '
                           f'({type(error).__name__}: {error})') from error


def _chunks(path: str, start: int = 0) -> Iterator[bytes]:
    """The bytes of ``path`` from ``start`` on, 16 MiB at a time."""
    with open(path, 'rb') as f:
        f.seek(start)
        yield from iter(lambda: f.read(1 << 24), b'')


def _safetensors_header(path: str) -> Tuple[dict, int]:
    """The parsed JSON header of a ``.safetensors`` file and where its data begins."""
    with open(path, 'rb') as f:
        head = f.read(8)
        size = int.from_bytes(head, 'little') if len(head) == 8 else -1
        text = f.read(size) if 1 < size <= os.path.getsize(path) - 8 else b''
    if not text.startswith(b'{'):
        kind = ('a zip-format torch file (a .pth renamed?)' if head.startswith(b'PK\x03\x04')
                else 'a legacy torch file (a .pth renamed?)' if head.startswith(b'\x80')
                else 'empty' if not head else 'in an unknown format')
        raise ValueError(f'{path} is named .safetensors but is not a safetensors file: it is '
                         f'{kind}')
    try:
        return json.loads(text), 8 + size
    except ValueError as error:
        raise RuntimeError(f'{path} is damaged: its safetensors header is not valid JSON '
                           f'({error})') from error


def verify_safetensors(path: str) -> bool:
    """Check a ``.safetensors`` file's data against the CRC-32 in its metadata, if any, and
    return whether it had one. ``RuntimeError`` if the data differs, ``ValueError`` (saying
    what the file is) if it is no safetensors file."""
    header, start = _safetensors_header(path)
    stored = header.get('__metadata__', {}).get(CRC_KEY)
    if stored is None:
        return False
    crc = 0
    for chunk in _chunks(path, start):
        crc = zlib.crc32(chunk, crc)
    if f'{crc:08x}' != stored:
        raise RuntimeError(f'{path} is damaged: its tensor data does not match the CRC-32 '
                           f'checksum in its metadata ({stored}, now {crc:08x})')
    return True


def save_safetensors(tensors: Dict[str, torch.Tensor], path: str,
                     metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` as a ``.safetensors`` file with a CRC-32 of its data.

    Args:
        tensors (dict[str, torch.Tensor]): What to write.
        path (str): Where (written as given; use it inside ``atomic_output``).
        metadata (dict[str, str], optional): More header metadata.
    """
    from safetensors.torch import save
    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    start = 8 + int.from_bytes(blob[:8], 'little')
    header = json.loads(blob[8:start])
    with memoryview(blob) as view:
        header.setdefault('__metadata__', {})[CRC_KEY] = f'{zlib.crc32(view[start:]):08x}'
        text = json.dumps(header, separators=(',', ':')).encode()
        text += b' ' * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors has it
        with open(path, 'wb') as f:
            f.write(len(text).to_bytes(8, 'little') + text)
            f.write(view[start:])


def content_fingerprint(path: str) -> str:
    """A SHA-256 that changes when the content of the weight file at ``path`` changes.

    Cheap where the file holds checksums of its content (a zip-format torch file, or a
    safetensors file of :func:`save_safetensors`): they are hashed. Any other file is
    hashed whole. The folder that ``torch.save`` names after the file inside the archive
    is left out, so a copy of the same tensors under another name has the same fingerprint.
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            records = [(i.filename.partition('/')[2], i.CRC, i.file_size)
                       for i in archive.infolist()]
        if all(crc or not size for _, crc, size in records):
            return hashlib.sha256(json.dumps(records).encode()).hexdigest()
    elif path.endswith('.safetensors'):
        header, _ = _safetensors_header(path)
        if CRC_KEY in header.get('__metadata__', {}):
            return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()
    digest = hashlib.sha256()
    for chunk in _chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def file_fingerprint(path: str) -> str:
    """:func:`content_fingerprint`, computed once per file and process (cached by real path,
    inode, size and modification time: a file changed at the same path is hashed again)."""
    stat = os.stat(path)
    return _cached_fingerprint(os.path.realpath(path),
                               (stat.st_ino, stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=64)
def _cached_fingerprint(path: str, version: Tuple[int, int, int]) -> str:
    return content_fingerprint(path)
