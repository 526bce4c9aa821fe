import os.path as osp

import pytest
from mmengine.logging import MessageHub, MMLogger

from dinolora_mmseg.engine.hooks import AtomicCheckpointHook
from dinolora_mmseg.utils.atomic_write import atomic_write_bytes


class Runner:
    """What CheckpointHook uses of mmengine's Runner; ``save_checkpoint`` can be made to fail."""

    def __init__(self, work_dir):
        self.work_dir = str(work_dir)
        self.message_hub = MessageHub.get_instance(f'hub-{work_dir}')
        self.logger = MMLogger.get_instance(f'logger-{work_dir}')
        self.epoch = self.iter = 0
        self.fail = False

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        if self.fail:
            raise KeyboardInterrupt('killed while saving')
        atomic_write_bytes(osp.join(out_dir, filename), b'checkpoint')


def test_the_previous_best_checkpoint_outlives_a_failed_save(tmp_path):
    runner = Runner(tmp_path)
    hook = AtomicCheckpointHook(interval=1000, by_epoch=False, save_best='mIoU')
    hook.before_train(runner)
    for step, score in ((2, 10.0), (4, 20.0)):
        runner.iter = step
        hook.after_val_epoch(runner, {'mIoU': score})
    assert sorted(p.name for p in tmp_path.glob('best_*')) == ['best_mIoU_iter_4.pth']
    runner.iter, runner.fail = 6, True
    with pytest.raises(KeyboardInterrupt):
        hook.after_val_epoch(runner, {'mIoU': 30.0})
    assert sorted(p.name for p in tmp_path.glob('best_*')) == ['best_mIoU_iter_4.pth']
