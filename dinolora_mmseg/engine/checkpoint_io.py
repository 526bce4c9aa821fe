"""Checkpoint I/O of this project's tools and hooks; nothing here changes MMEngine's own.

- :func:`load_checkpoint_into`: how ``tools/test.py`` and ``LoadCheckpointHook``
  (``load_from`` of ``tools/train.py``, :func:`load_from_through_hook`) read a
  checkpoint: CRC-checked and weights-only
  (:func:`~dinolora_mmseg.utils.checkpoint_file.read_checkpoint`) unless the user named
  the file as trusted (``trusted_checkpoints``,
  :func:`~dinolora_mmseg.utils.checkpoint_file.is_trusted`).
- :class:`AtomicLocalBackend`: the file backend ``AtomicCheckpointHook`` saves through,
  registered under its own name, :data:`ATOMIC_LOCAL_BACKEND`, when such a hook is built.
- :func:`find_resumable_checkpoint`: the newest complete checkpoint, for ``--resume``.
"""
import logging
import os
import os.path as osp
from typing import Dict, Optional, Union

from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.fileio.backends.registry_utils import backends
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ..utils.atomic_write import atomic_write_bytes
from ..utils.checkpoint_file import is_trusted, load_into_model, read_checkpoint
from ..utils.integrity import verify_zip

ATOMIC_LOCAL_BACKEND = 'dinolora_atomic_local'


class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend, writing every file atomically."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        atomic_write_bytes(os.fspath(filepath), obj)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


def register_atomic_local_backend() -> str:
    """Register :class:`AtomicLocalBackend` as :data:`ATOMIC_LOCAL_BACKEND` (once; no
    URI prefix, so no other backend is replaced) and return that name."""
    if ATOMIC_LOCAL_BACKEND not in backends:
        register_backend(ATOMIC_LOCAL_BACKEND, AtomicLocalBackend)
    return ATOMIC_LOCAL_BACKEND


def load_from_through_hook(cfg) -> None:
    """Hand ``cfg.load_from`` of a run that does not resume to ``LoadCheckpointHook``
    (trusted when listed in ``trusted_checkpoints``), which reads it with
    :func:`read_checkpoint`; MMEngine's ``load_from`` would read it with ``torch.load``.

    Args:
        cfg (Config): The training config; changed in place.
    """
    if cfg.get('load_from') and not cfg.get('resume', False):
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(
            type='LoadCheckpointHook', filename=cfg.load_from,
            trusted=is_trusted(cfg, cfg.load_from))]
        cfg.load_from = None


def load_checkpoint_into(runner, filename: str, strict: bool, trusted: bool = False) -> Dict:
    """Load a checkpoint into ``runner``'s model as ``Runner.load_checkpoint`` does
    (``after_load_checkpoint`` hooks, then the state dict into the unwrapped model,
    ``module.`` prefixes dropped), reading the file with :func:`read_checkpoint`.

    Args:
        runner (Runner): The runner.
        filename (str): Local checkpoint file.
        strict (bool): Refuse missing and unexpected keys.
        trusted (bool): The user named the file as trusted: unpickle it in full.

    Returns:
        dict: The checkpoint.
    """
    checkpoint = read_checkpoint(filename, map_location='cpu', trusted=trusted)
    runner.call_hook('after_load_checkpoint', checkpoint=checkpoint)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    load_into_model(model, checkpoint, strict, logger=runner.logger)
    runner.logger.info(f'Loaded checkpoint {filename} ('
                       f'{"trusted: unpickled in full" if trusted else "weights only"})')
    return checkpoint


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
