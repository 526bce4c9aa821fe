"""How MMEngine reads and writes checkpoints once this package is imported.

- Local checkpoints are read weights-only (``torch.load(weights_only=True)``), even
  where a torch version or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` would unpickle more, so
  ``load_from``/``tools/test.py`` of a file from a stranger runs none of its code. Every
  record is checked against its CRC-32 first, so a damaged file is refused, not
  evaluated; a refused or damaged file is named in the error.
- ``.safetensors`` files load as checkpoints too (checked where they carry a checksum).
- Local files are written atomically (:mod:`dinolora_mmseg.utils.atomic_write`), so a
  run killed while saving never leaves a torn checkpoint or ``last_checkpoint``.
"""
import logging
import os
import os.path as osp
from typing import Dict, Optional, Union

from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from ..utils.atomic_write import atomic_write_bytes
from ..utils.checkpoint_file import read_checkpoint
from ..utils.integrity import verify_zip
from ..utils.weights import load_weights


class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend, writing every file atomically."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        atomic_write_bytes(os.fspath(filepath), obj)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


register_backend('local', AtomicLocalBackend, force=True, prefixes='')


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_local_checkpoint(filename: str, map_location=None) -> Dict:
    """Read a local checkpoint weights-only, naming the file in every error.

    Args:
        filename (str): Path of the checkpoint.
        map_location: As for :func:`torch.load`.
    """
    return read_checkpoint(filename, map_location=map_location)


@CheckpointLoader.register_scheme(prefixes=r'.*\.safetensors$')
def load_safetensors_checkpoint(filename: str, map_location=None) -> Dict:
    """MMEngine loader for local ``.safetensors`` files (``load_from``, ``tools/test.py``).

    Args:
        filename (str): Path of the file.
        map_location: Ignored; tensors are loaded on the CPU.
    """
    return {'state_dict': load_weights(filename, prefixes=())}


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest complete checkpoint in ``work_dir``, for ``--resume``.

    The one ``last_checkpoint`` names, if it is readable; else the ``iter_*.pth`` /
    ``epoch_*.pth`` with the highest number that is a complete archive.

    Returns:
        str | None: Its path, or None when the folder holds none.
    """
    def complete(path: str) -> bool:
        try:
            verify_zip(path)
            return True
        except (OSError, RuntimeError) as error:
            print_log(f'{error}; looking for an older checkpoint', logger='current',
                      level=logging.WARNING)
            return False

    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and not osp.isfile(named):
            print_log(f'{pointer} names {named}, which does not exist; looking for another '
                      'checkpoint', logger='current', level=logging.WARNING)
        elif named and complete(named):
            return named
    numbered = []
    for name in os.listdir(work_dir) if osp.isdir(work_dir) else []:
        stem, ext = osp.splitext(name)
        prefix, _, number = stem.partition('_')
        if ext == '.pth' and prefix in ('iter', 'epoch') and number.isdigit():
            numbered.append((int(number), osp.join(work_dir, name)))
    for _, path in sorted(numbered, reverse=True):
        if complete(path):
            return path
    return None
