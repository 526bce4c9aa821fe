from types import SimpleNamespace

import pytest
import torch

from dinolora_mmseg.engine import FiniteLossHook


@pytest.mark.parametrize('loss', [float('nan'), float('inf'), torch.tensor(float('-inf'))])
def test_stops_at_non_finite_loss_naming_the_iteration(loss):
    with pytest.raises(FloatingPointError, match='loss is .* at iteration 8'):
        FiniteLossHook().after_train_iter(SimpleNamespace(iter=7), 0, outputs={'loss': loss})


def test_finite_loss_passes():
    FiniteLossHook().after_train_iter(SimpleNamespace(iter=7), 0,
                                      outputs={'loss': torch.tensor(0.5)})


def test_runs_before_the_checkpoint_hook():
    from mmengine.hooks import CheckpointHook
    from mmengine.runner.priority import get_priority
    assert get_priority(FiniteLossHook.priority) < get_priority(CheckpointHook.priority)
