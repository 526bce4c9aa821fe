import os.path as osp
from typing import List, Tuple

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

from ...utils.atomic_write import atomic_write_bytes, remove_stale_temp_files


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
    best) before it writes the new one, and writes ``last_checkpoint`` with a plain
    ``open``: with ``max_keep_ckpts=1`` a run killed while saving keeps no checkpoint
    and a ``last_checkpoint`` naming a deleted file. This hook, with the same
    arguments:

    - removes outdated checkpoints only after the new checkpoint and ``last_checkpoint``
      are complete (a kill in between leaves one checkpoint too many, never one too few);
    - writes ``last_checkpoint`` atomically (a link there is replaced, not followed);
    - removes, when training starts, the temporary files of a save that was killed;
    - when a save fails (a full disk...), names the file and the checkpoint that
      ``last_checkpoint`` still names, from which ``--resume`` goes on.

    Checkpoints are written atomically by the local file backend of
    :mod:`dinolora_mmseg.engine.checkpoint_io`.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process():
            for folder in sorted({self.out_dir, runner.work_dir}):
                for path in remove_stale_temp_files(folder):
                    runner.logger.info(f'Removed {path}, left by an interrupted save')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.file_backend.join_path(
                    self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft())))
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir, filename, self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler, meta=meta,
                by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        except OSError as error:
            if error.errno is None:
                raise
            raise OSError(error.errno, f'{error.strerror}; {self._resume_hint(runner)}') \
                from error
        if not is_main_process():
            return
        atomic_write_bytes(osp.join(runner.work_dir, 'last_checkpoint'),
                           self.last_ckpt.encode())
        for path in outdated:
            if path != self.last_ckpt:
                self._remove(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        backend = self.file_backend
        self.file_backend = deferred = _DeferredRemovals(backend)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        for method, path in deferred.calls:
            getattr(backend, method)(path)

    @staticmethod
    def _resume_hint(runner) -> str:
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        if not osp.isfile(pointer):
            return 'no earlier checkpoint of this run is complete'
        with open(pointer) as f:
            return (f'{pointer} still names {f.read().strip()}: fix the cause and go on from '
                    'there with --resume')

    def _remove(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # checkpoints saved by DeepSpeed are folders
            self.file_backend.rmtree(path)
