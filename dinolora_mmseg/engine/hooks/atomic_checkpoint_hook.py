import contextlib
import os
import os.path as osp
from pathlib import Path
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
        if name in ('remove', 'rmtree'):
            return lambda path: self.calls.append((name, path))
        return getattr(self.backend, name)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` that never leaves a run without a complete checkpoint.

    The stock hook removes outdated checkpoints before it writes the new one, truncates
    files in place and writes through a link at ``last_checkpoint``. This one saves through
    :class:`~dinolora_mmseg.engine.checkpoint_io.AtomicLocalBackend` (unless
    ``backend_args``, ``file_client_args`` or a remote ``out_dir`` are given) and removes
    only after a save completed; see docs/reliability.md.

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
        except BaseException as error:
            deferred.calls.clear()  # a failed save removes nothing
            if isinstance(error, OSError) and error.errno is not None:
                raise OSError(error.errno, f'{error.strerror}; {self._resume_hint(runner)}') \
                    from error
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
        return (f'{pointer} still names {Path(pointer).read_text().strip()}: fix the cause '
                'and go on from there with --resume')
