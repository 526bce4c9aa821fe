"""Checkpoint I/O of this project's tools and hooks; nothing here changes MMEngine's own.
Reading: :mod:`~dinolora_mmseg.utils.checkpoint_file`; saving: :class:`AtomicLocalBackend`."""
import logging
import os
import os.path as osp
import re
from pathlib import Path
from typing import Dict, Optional, Union

from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.fileio.backends.registry_utils import backends
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ..utils.atomic_write import atomic_write_bytes
from ..utils.checkpoint_file import is_trusted, load_into_model, read_checkpoint
from ..utils.integrity import verify_zip

ATOMIC_LOCAL_BACKEND = 'dinolora_atomic_local'
NUMBERED_CHECKPOINT = re.compile(r'(iter|epoch)_(\d+)\.pth')


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
    (trusted when listed in ``trusted_checkpoints``), in place: MMEngine's ``load_from``
    would read it with ``torch.load``."""
    if cfg.get('load_from') and not cfg.get('resume', False):
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(
            type='LoadCheckpointHook', filename=cfg.load_from,
            trusted=is_trusted(cfg, cfg.load_from))]
        cfg.load_from = None


def load_checkpoint_into(runner, filename: str, strict: bool, trusted: bool = False) -> Dict:
    """Load a checkpoint into ``runner``'s model as ``Runner.load_checkpoint`` does
    (``after_load_checkpoint`` hooks, then the state dict), reading it with
    :func:`read_checkpoint`; returns the checkpoint.

    Args:
        runner (Runner): The runner.
        filename (str): Local checkpoint file.
        strict (bool): Refuse missing and unexpected keys.
        trusted (bool): Unpickle in full (the user named the file as trusted).
    """
    checkpoint = read_checkpoint(filename, trusted=trusted)
    runner.call_hook('after_load_checkpoint', checkpoint=checkpoint)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    load_into_model(model, checkpoint, strict, logger=runner.logger)
    runner.logger.info(f'Loaded checkpoint {filename} ('
                       f'{"trusted: unpickled in full" if trusted else "weights only"})')
    return checkpoint


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest complete checkpoint in ``work_dir`` for ``--resume`` (None if there is none):
    the one ``last_checkpoint`` names, else the complete ``iter_*``/``epoch_*.pth`` with the
    highest number."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = Path(pointer).read_text().strip() if osp.isfile(pointer) else ''
    if named and not osp.isfile(named):
        print_log(f'{pointer} names {named}, which does not exist; looking for another '
                  'checkpoint', logger='current', level=logging.WARNING)
    names = os.listdir(work_dir) if osp.isdir(work_dir) else []
    numbered = [found for found in map(NUMBERED_CHECKPOINT.fullmatch, names) if found]
    numbered.sort(key=lambda found: (int(found[2]), found[0]), reverse=True)
    candidates = [named] if osp.isfile(named) else []
    for path in candidates + [osp.join(work_dir, found[0]) for found in numbered]:
        try:
            verify_zip(path)
            return path
        except (OSError, RuntimeError) as error:
            print_log(f'{error}; looking for an older checkpoint', logger='current',
                      level=logging.WARNING)
    return None
