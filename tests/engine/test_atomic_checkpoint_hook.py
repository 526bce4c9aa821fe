import errno
import os
import os.path as osp

import pytest
from mmengine.hooks import CheckpointHook
from mmengine.logging import MessageHub, MMLogger

from dinolora_mmseg.engine.checkpoint_io import AtomicLocalBackend
from dinolora_mmseg.engine.hooks import AtomicCheckpointHook
from dinolora_mmseg.utils.atomic_write import atomic_write_bytes


class Runner:
    """What CheckpointHook uses of mmengine's Runner; ``save_checkpoint`` writes through the
    backend the hook names (as mmengine's does) and can be made to fail."""

    def __init__(self, work_dir, max_iters=100):
        self.work_dir = str(work_dir)
        self.message_hub = MessageHub.get_instance(f'hub-{work_dir}')
        self.logger = MMLogger.get_instance(f'logger-{work_dir}')
        self.epoch = self.iter = 0
        self.max_iters = max_iters
        self.fail = None
        self.hook = None

    def save_checkpoint(self, out_dir, filename, *args, backend_args=None, **kwargs):
        self.hook.before_save_checkpoint(self, {})
        if self.fail is not None:
            raise self.fail
        path = osp.join(out_dir, filename)
        if backend_args == self.hook.backend_args and backend_args is not None:
            AtomicLocalBackend().put(b'checkpoint', path)
        else:
            atomic_write_bytes(path, b'checkpoint')


def start(tmp_path, **kwargs):
    runner = Runner(tmp_path)
    runner.hook = AtomicCheckpointHook(by_epoch=False, **kwargs)
    runner.hook.before_train(runner)
    return runner, runner.hook


def save_at(runner, step):
    runner.iter = step - 1
    runner.hook.after_train_iter(runner, batch_idx=step - 1)


def test_the_previous_best_checkpoint_outlives_a_failed_save(tmp_path):
    runner, hook = start(tmp_path, interval=1000, save_best='mIoU')
    for step, score in ((2, 10.0), (4, 20.0)):
        runner.iter = step
        hook.after_val_epoch(runner, {'mIoU': score})
    assert sorted(p.name for p in tmp_path.glob('best_*')) == ['best_mIoU_iter_4.pth']
    runner.iter, runner.fail = 6, KeyboardInterrupt('killed while saving')
    with pytest.raises(KeyboardInterrupt):
        hook.after_val_epoch(runner, {'mIoU': 30.0})
    assert sorted(p.name for p in tmp_path.glob('best_*')) == ['best_mIoU_iter_4.pth']


def test_a_new_best_at_the_same_iteration_is_not_removed(tmp_path):
    runner, hook = start(tmp_path, interval=1000, save_best='mIoU')
    runner.iter = 4
    hook.after_val_epoch(runner, {'mIoU': 10.0})
    hook.after_val_epoch(runner, {'mIoU': 20.0})  # the stock hook removes, then saves again
    assert sorted(p.name for p in tmp_path.glob('best_*')) == ['best_mIoU_iter_4.pth']


def test_with_max_keep_ckpts_1_a_killed_save_keeps_the_last_checkpoint(tmp_path):
    runner, hook = start(tmp_path, interval=5, max_keep_ckpts=1)
    save_at(runner, 5)
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_5.pth')
    runner.fail = KeyboardInterrupt('killed while saving')
    with pytest.raises(KeyboardInterrupt):
        save_at(runner, 10)
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_5.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_5.pth')


def test_outdated_checkpoints_go_after_the_new_one_and_last_checkpoint(tmp_path, monkeypatch):
    runner, hook = start(tmp_path, interval=5, max_keep_ckpts=1)
    save_at(runner, 5)
    seen, remove = [], os.remove

    def recording_remove(path):
        seen.append((path, sorted(os.listdir(tmp_path)),
                     (tmp_path / 'last_checkpoint').read_text()))
        remove(path)

    monkeypatch.setattr(os, 'remove', recording_remove)
    save_at(runner, 10)
    assert seen == [(str(tmp_path / 'iter_5.pth'), ['iter_10.pth', 'iter_5.pth', 'last_checkpoint'],
                     str(tmp_path / 'iter_10.pth'))]
    assert sorted(os.listdir(tmp_path)) == ['iter_10.pth', 'last_checkpoint']


def test_a_link_at_last_checkpoint_is_replaced_not_followed(tmp_path):
    precious = tmp_path / 'precious.txt'
    precious.write_text('keep me')
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'last_checkpoint').symlink_to(precious)
    runner, _ = start(work, interval=5)
    save_at(runner, 5)
    assert precious.read_text() == 'keep me'
    assert not (work / 'last_checkpoint').is_symlink()
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_5.pth')


def test_a_full_disk_names_the_checkpoint_to_resume_from(tmp_path):
    runner, _ = start(tmp_path, interval=5, max_keep_ckpts=1)
    save_at(runner, 5)
    runner.fail = OSError(errno.ENOSPC, 'No space left on device while writing iter_10.pth')
    with pytest.raises(OSError, match=f"while writing iter_10.pth; {tmp_path / 'last_checkpoint'} "
                                      f"still names {tmp_path / 'iter_5.pth'}") as error:
        save_at(runner, 10)
    assert error.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_5.pth']


def test_checkpoints_are_written_by_the_atomic_backend_under_its_own_name():
    hook = AtomicCheckpointHook(interval=5)
    assert hook.backend_args == dict(backend='dinolora_atomic_local')
    assert AtomicCheckpointHook(interval=5, backend_args=dict(backend='local')).backend_args \
        == dict(backend='local')
    assert AtomicCheckpointHook(interval=5, out_dir='s3://bucket/run').backend_args is None
    assert isinstance(hook, CheckpointHook)
    assert not {'_save_checkpoint_with_step', '_save_best_checkpoint',
                '_save_checkpoint'} & set(vars(AtomicCheckpointHook))
