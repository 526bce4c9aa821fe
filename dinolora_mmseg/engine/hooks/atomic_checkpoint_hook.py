import contextlib
import os
import os.path as osp
from typing import List, Tuple

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

from ...utils.atomic_write import remove_stale_temp_files
from ..checkpoint_io import register_atomic_local_backend


class _DeferredRemovals:
    """A file backend that records ``remove``/``rmtree`` calls instead of running them."""

    def __init__(self, backend):
        self.backend = backend
        self.calls: List[Tuple[str, str]] = []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def remove(self, path: str) -> None:
        self.calls.append(('remove', path))

    def rmtree(self, path: str) -> None:
        self.calls.append(('rmtree', path))


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` that never leaves a run without a complete checkpoint.

    The stock hook removes the outdated checkpoint (``max_keep_ckpts``, the previous
    best) before it writes the new one, writes through a backend that truncates the file
    in place, and writes ``last_checkpoint`` with a plain ``open`` (following a link
    there): with ``max_keep_ckpts=1`` a run killed while saving keeps no checkpoint. This
    hook, with the same arguments, on MMEngine's public hook methods:

    - saves through :class:`~dinolora_mmseg.engine.checkpoint_io.AtomicLocalBackend`
      (``backend_args=dict(backend='dinolora_atomic_local')``, registered under that
      name when the hook is built) unless ``backend_args``, ``file_client_args`` or a
      remote ``out_dir`` are given: each checkpoint is complete or absent;
    - runs the removals of outdated checkpoints (which the stock hook asks of its
      ``file_backend``) only after the save, the new checkpoint and ``last_checkpoint``
      complete; a save that fails removes nothing (one checkpoint too many, never one
      too few);
    - replaces a link at ``last_checkpoint`` by a file, never writing through it;
    - removes, when training starts, the temporary files of a save that was killed;
    - when a save fails (a full disk...), names the file and the checkpoint that
      ``last_checkpoint`` still names, from which ``--resume`` goes on.

    Args:
        **kwargs: Those of MMEngine's ``CheckpointHook``.
    """

    def __init__(self, **kwargs):
        local = '://' not in str(kwargs.get('out_dir') or '')
        if local and kwargs.get('backend_args') is None and \
                kwargs.get('file_client_args') is None:
            kwargs['backend_args'] = dict(backend=register_atomic_local_backend())
        super().__init__(**kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self.file_backend = _DeferredRemovals(self.file_backend)
        if is_main_process():
            for folder in sorted({self.out_dir, runner.work_dir}):
                for path in remove_stale_temp_files(folder):
                    runner.logger.info(f'Removed {path}, left by an interrupted save')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        if is_main_process() and osp.islink(pointer):
            os.remove(pointer)  # the stock hook would write into the file it points to

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        with self._removing_afterwards(runner):
            super().after_train_iter(runner, batch_idx, data_batch, outputs)

    def after_train_epoch(self, runner) -> None:
        with self._removing_afterwards(runner):
            super().after_train_epoch(runner)

    def after_val_epoch(self, runner, metrics) -> None:
        with self._removing_afterwards(runner):
            super().after_val_epoch(runner, metrics)

    @contextlib.contextmanager
    def _removing_afterwards(self, runner):
        """Run the removals the stock hook asked for while saving, once it saved."""
        backend = getattr(self, 'file_backend', None)  # set in before_train
        deferred = backend if isinstance(backend, _DeferredRemovals) else _DeferredRemovals(None)
        try:
            yield
        except OSError as error:
            deferred.calls.clear()
            if error.errno is None:
                raise
            raise OSError(error.errno, f'{error.strerror}; {self._resume_hint(runner)}') \
                from error
        except BaseException:
            deferred.calls.clear()
            raise
        kept = {self.last_ckpt, getattr(self, 'best_ckpt_path', None),
                *(getattr(self, 'best_ckpt_path_dict', None) or {}).values()}
        calls, deferred.calls = deferred.calls, []
        for method, path in calls:
            if path not in kept and deferred.backend.exists(path):
                getattr(deferred.backend, method)(path)

    @staticmethod
    def _resume_hint(runner) -> str:
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        if not osp.isfile(pointer):
            return 'no earlier checkpoint of this run is complete'
        with open(pointer) as f:
            return (f'{pointer} still names {f.read().strip()}: fix the cause and go on from '
                    'there with --resume')
