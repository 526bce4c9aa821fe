import os
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dinolora_mmseg.engine import FiniteLossHook
from tests.helpers import free_port


@pytest.mark.parametrize('loss', [float('nan'), float('inf'), torch.tensor(float('-inf'))])
def test_stops_at_non_finite_loss_naming_the_iteration(loss):
    with pytest.raises(FloatingPointError, match='loss is not finite at iteration 8'):
        FiniteLossHook().after_train_iter(SimpleNamespace(iter=7), 0, outputs={'loss': loss})


def test_finite_loss_passes():
    FiniteLossHook().after_train_iter(SimpleNamespace(iter=7), 0,
                                      outputs={'loss': torch.tensor(0.5)})


def test_runs_before_the_checkpoint_hook():
    from mmengine.hooks import CheckpointHook
    from mmengine.runner.priority import get_priority
    assert get_priority(FiniteLossHook.priority) < get_priority(CheckpointHook.priority)


def test_a_loss_that_requires_grad_gives_no_warning():
    loss = (torch.ones(3, requires_grad=True) * 2).sum()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        FiniteLossHook().after_train_iter(SimpleNamespace(iter=0), 0, outputs={'loss': loss})


def _check_on_two_ranks(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=2)
    loss = torch.tensor(float('nan') if rank == 1 else 0.5)
    try:
        FiniteLossHook().after_train_iter(SimpleNamespace(iter=3), 0, outputs={'loss': loss})
        outcome = 'continued'
    except FloatingPointError as error:
        outcome = str(error)
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f'rank{rank}.txt'), 'w') as f:
        f.write(outcome)


def test_every_rank_stops_when_one_rank_has_a_non_finite_loss(tmp_path):
    mp.spawn(_check_on_two_ranks, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        outcome = (tmp_path / f'rank{rank}.txt').read_text()
        assert 'loss is not finite on rank(s) [1] at iteration 4' in outcome, (rank, outcome)
