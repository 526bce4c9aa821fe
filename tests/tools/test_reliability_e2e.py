"""Crash, resume, failed saves, damaged checkpoints, shared work dirs, bad launches and
distributed parity of the training/test tools."""
import os
import os.path as osp
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from tests.helpers import (PYTHON, ROOT, corrupt_a_tensor, free_port, make_demo_voc, run_tool,
                           write_tiny_config)

DEMO = osp.join(ROOT, 'configs/demo/dinov2_lora_voc_demo.py')


@pytest.fixture(scope='module')
def voc(tmp_path_factory):
    return make_demo_voc(tmp_path_factory.mktemp('reliability'), num_train=8, num_val=2)


def trainable(checkpoint):
    state = torch.load(checkpoint, weights_only=True)['state_dict']
    return {k: v for k, v in state.items() if '.lora_' in k or k.startswith('decode_head.')}


def run(*args, env=None):
    return subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_resume_after_sigkill_equals_an_uninterrupted_run(voc, tmp_path):
    config = write_tiny_config(
        tmp_path / 'resume.py', DEMO, voc,
        randomness='dict(seed=0, deterministic=True)',
        train_cfg='dict(max_iters=40, val_interval=1000)',
        default_hooks='dict(checkpoint=dict(interval=5, max_keep_ckpts=20))')
    run_tool(PYTHON, 'tools/train.py', config, '--work-dir', tmp_path / 'straight')

    work = tmp_path / 'killed'
    process = subprocess.Popen([PYTHON, 'tools/train.py', config, '--work-dir', work], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (work / 'last_checkpoint').exists() and process.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, 'the run ended before it could be killed'
    assert not (work / 'iter_40.pth').exists()
    output = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', work, '--resume')
    assert 'resumed' in output.lower()
    straight = trainable(tmp_path / 'straight/iter_40.pth')
    resumed = trainable(work / 'iter_40.pth')
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert (straight[key] - resumed[key]).abs().max() <= 1e-6, key


def test_two_process_training_equals_one_process(voc, tmp_path):
    """Same global batch (4 = 2 x 2) over the same samples, no random augmentation, SGD
    (Adam's normalised step would magnify float noise in near-zero gradients) and the
    loss averaged over all pixels of a crop (equal on both ranks): DDP's gradient mean
    then equals the single-process gradient up to float rounding (tolerance 1e-6)."""
    pipeline = ("[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), "
                "dict(type='Resize', scale=(112, 84), keep_ratio=False), "
                "dict(type='PackSegInputs')]")
    config = write_tiny_config(
        tmp_path / 'parity.py', DEMO, voc,
        randomness='dict(seed=0, deterministic=True)',
        train_cfg='dict(max_iters=3, val_interval=1000)',
        optim_wrapper="dict(_delete_=True, type='OptimWrapper', "
                      "optimizer=dict(type='SGD', lr=0.05, momentum=0.9))",
        param_scheduler='[]',
        default_hooks='dict(checkpoint=dict(interval=3))')
    with open(config, 'a') as f:  # replaces the file's own train_dataloader and model lines
        f.write(f"train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, "
                f"dataset=dict(data_root='{voc}', pipeline={pipeline}))\n"
                "model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=64, "
                "num_layers=2, num_heads=2), pretrained=None), decode_head=dict("
                "in_channels=64, loss_decode=dict(avg_non_ignore=False)))\n")
    run_tool(PYTHON, 'tools/train.py', config, '--work-dir', tmp_path / 'one')
    run_tool('bash', 'tools/dist_train.sh', config, 2, '--work-dir', tmp_path / 'two',
             '--cfg-options', 'train_dataloader.batch_size=2',
             env=dict(PYTHON=PYTHON, PORT=str(free_port())))
    one, two = trainable(tmp_path / 'one/iter_3.pth'), trainable(tmp_path / 'two/iter_3.pth')
    start = trainable_init(config)
    assert any((one[k] - start[k]).abs().max() > 1e-4 for k in one)  # it did train
    for key in one:
        assert (one[key] - two[key]).abs().max() <= 1e-6, key


def trainable_init(config):
    cfg = Config.fromfile(config)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return {k: v for k, v in MODELS.build(cfg.model).state_dict().items()
            if '.lora_' in k or k.startswith('decode_head.')}


def test_checkpoint_of_another_architecture_is_refused(voc, tmp_path):
    wide = write_tiny_config(tmp_path / 'wide.py', DEMO, voc, embed_dims=96)
    cfg = Config.fromfile(wide)
    init_default_scope('mmseg')
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict()}, tmp_path / 'wide.pth')
    narrow = write_tiny_config(tmp_path / 'narrow.py', DEMO, voc, embed_dims=64)
    result = run(PYTHON, 'tools/test.py', narrow, tmp_path / 'wide.pth', '--work-dir', tmp_path)
    assert result.returncode != 0
    assert ('backbone.cls_token: the checkpoint has shape (1, 1, 96), the model (1, 1, 64)'
            in result.stderr)


def test_more_processes_than_test_images(voc, tmp_path):
    config = write_tiny_config(tmp_path / 'c.py', DEMO, voc)
    result = run('bash', 'tools/dist_test.sh', config, tmp_path / 'none.pth', 3,
                 env=dict(PYTHON=PYTHON, PORT=str(free_port())))
    assert result.returncode != 0
    assert '3 processes for 2 test images' in result.stderr


def test_rendezvous_port_in_use(voc, tmp_path):
    with socket.create_server(('', 0)) as busy:
        port = busy.getsockname()[1]
        started = time.time()
        result = run('bash', 'tools/dist_test.sh', DEMO, tmp_path / 'none.pth', 2,
                     env=dict(PYTHON=PYTHON, PORT=str(port)))
    assert result.returncode != 0 and time.time() - started < 30
    assert f'port {port} is in use' in result.stderr


def test_a_dead_worker_ends_the_launch(voc, tmp_path):
    config = write_tiny_config(tmp_path / 'c.py', DEMO, voc)
    launcher = subprocess.Popen(
        ['bash', 'tools/dist_test.sh', str(config), str(tmp_path / 'none.pth'), '2'], cwd=ROOT,
        env={**os.environ, 'PYTHON': PYTHON, 'PORT': str(free_port())},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers = []
    deadline = time.time() + 120
    while len(workers) < 2:
        assert time.time() < deadline and launcher.poll() is None
        time.sleep(0.2)
        workers = subprocess.run(['pgrep', '-P', str(launcher.pid)],  # torchrun's workers
                                 capture_output=True, text=True).stdout.split()
    os.kill(int(workers[1]), signal.SIGKILL)
    killed = time.time()
    try:
        code = launcher.wait(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert code != 0 and time.time() - killed < 60


# tools/train.py with os.fsync failing on the temporary file of iter_10.pth: 'kill' kills
# the process there (a kill while the checkpoint is written), 'full' raises ENOSPC.
SAVE_FAILS = '''
import errno, os, runpy, signal, sys
fsync, failure = os.fsync, sys.argv[1]
def failing_fsync(fd):
    if '/iter_10.pth.' in os.readlink(f'/proc/self/fd/{fd}'):
        if failure == 'kill':
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    fsync(fd)
os.fsync = failing_fsync
sys.argv = ['tools/train.py'] + sys.argv[2:]
runpy.run_path('tools/train.py', run_name='__main__')
'''


@pytest.mark.parametrize('failure', ['kill', 'full'])
def test_a_failed_save_keeps_the_previous_checkpoint_and_resumes(voc, tmp_path, failure):
    """AtomicCheckpointHook, as the configs set it, with max_keep_ckpts=1."""
    config = write_tiny_config(
        tmp_path / 'c.py', DEMO, voc, train_cfg='dict(max_iters=10, val_interval=1000)',
        default_hooks='dict(checkpoint=dict(interval=5, max_keep_ckpts=1))')
    work, precious = tmp_path / 'work', tmp_path / 'precious.txt'
    work.mkdir()
    precious.write_text('keep me')
    (work / 'last_checkpoint').symlink_to(precious)
    result = run(PYTHON, '-c', SAVE_FAILS, failure, config, '--work-dir', work)
    temp_files = sorted(p.name for p in work.glob('*.tmp'))
    if failure == 'kill':
        assert result.returncode == -signal.SIGKILL
        assert len(temp_files) == 1 and temp_files[0].startswith('iter_10.pth.')
    else:
        assert result.returncode != 0 and temp_files == []
        assert (f"No space left on device while writing {work / 'iter_10.pth'}"
                in result.stderr), result.stderr[-3000:]
        assert f"{work / 'last_checkpoint'} still names {work / 'iter_5.pth'}" in result.stderr
    assert precious.read_text() == 'keep me'
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_5.pth')
    assert trainable(work / 'iter_5.pth') and not (work / 'iter_10.pth').exists()

    output = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', work, '--resume')
    assert f"Resumed from {work / 'iter_5.pth'}" in output or 'resumed' in output.lower()
    assert ('left by an interrupted save' in output) == (failure == 'kill')
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_10.pth']
    assert not list(work.glob('*.tmp'))
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_10.pth')


def test_a_second_training_into_a_work_dir_in_use_is_refused(voc, tmp_path):
    config = write_tiny_config(
        tmp_path / 'c.py', DEMO, voc, train_cfg='dict(max_iters=100000, val_interval=100000)',
        default_hooks='dict(checkpoint=dict(interval=2, max_keep_ckpts=1))')
    work = tmp_path / 'work'
    first = subprocess.Popen([PYTHON, 'tools/train.py', config, '--work-dir', work], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (work / 'last_checkpoint').exists():
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.1)
        second = subprocess.run([PYTHON, 'tools/train.py', config, '--work-dir', work],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert (f'{work} is in use by another training (pid {first.pid} on '
                f'{socket.gethostname()}, started ') in second.stderr, second.stderr[-3000:]
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()


def test_resume_with_nothing_resumable_starts_from_the_beginning(voc, tmp_path):
    """With MMEngine's own CheckpointHook, which tools/train.py leaves as it is."""
    config = write_tiny_config(tmp_path / 'c.py', DEMO, voc,
                               train_cfg='dict(max_iters=2, val_interval=1000)',
                               default_hooks="dict(checkpoint=dict(type='CheckpointHook', "
                                             "interval=2))")
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))  # deleted since
    output = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', work, '--resume')
    assert f"names {work / 'iter_4.pth'}, which does not exist" in output
    assert f'--resume: no complete checkpoint in {work}; training starts from the beginning' \
        in output
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
    assert ') CheckpointHook' in output and 'AtomicCheckpointHook' not in output


@pytest.fixture(scope='module')
def tested(voc, tmp_path_factory):
    """A tiny config on the demo data and a checkpoint of its model."""
    root = tmp_path_factory.mktemp('tested')
    config = write_tiny_config(root / 'c.py', DEMO, voc)
    init_default_scope('mmseg')
    torch.save({'state_dict': MODELS.build(Config.fromfile(config).model).state_dict()},
               root / 'model.pth')
    return root, config, root / 'model.pth'


def test_show_dir_draws_every_test_image(tested, voc):
    root, config, checkpoint = tested
    run_tool(PYTHON, 'tools/test.py', config, checkpoint, '--work-dir', root / 'work',
             '--show-dir', root / 'painted')
    images = len((voc / 'ImageSets/Segmentation/val.txt').read_text().split())
    assert len(list((root / 'painted').rglob('*.png'))) == images == 2


def test_a_damaged_checkpoint_gives_no_numbers(tested, tmp_path):
    root, config, checkpoint = tested
    damaged = tmp_path / 'damaged.pth'
    damaged.write_bytes(checkpoint.read_bytes())
    corrupt_a_tensor(damaged)
    result = run(PYTHON, 'tools/test.py', config, damaged, '--work-dir', tmp_path)
    assert result.returncode != 0
    assert f'{damaged} is damaged' in result.stderr and 'Bad CRC-32' in result.stderr
    assert 'Iter(test)' not in result.stdout + result.stderr  # no metrics


def zoo_checkpoint(config, path):
    """A checkpoint as stock mmengine saves it (MMSeg's model zoo): HistoryBuffers and numpy
    values in ``meta`` and ``message_hub``, the model's weights (another seed than the
    config's) in ``state_dict``."""
    init_default_scope('mmseg')
    torch.manual_seed(1)
    losses = HistoryBuffer()
    losses.update(np.float64(0.25))
    torch.save({'meta': {'mmseg_version': '1.2.2', 'iter': 2, 'lr': np.float64(1e-4),
                         'hist': losses},
                'state_dict': MODELS.build(Config.fromfile(config).model).state_dict(),
                'message_hub': {'log_scalars': {'train/loss': losses}, 'runtime_info': {}}},
               path)
    return path


OPT_IN = 'add it to trusted_checkpoints in the config (--cfg-options trusted_checkpoints=[{}]) ' \
    'or pass --trust-checkpoint to tools/test.py'


def test_a_stock_mmseg_checkpoint_loads_once_trusted(tested, voc, tmp_path):
    """tools/test.py and load_from of tools/train.py: refused naming the opt-in, loaded with it."""
    _, config, _ = tested
    zoo = zoo_checkpoint(config, tmp_path / 'zoo.pth')
    refused = run(PYTHON, 'tools/test.py', config, zoo, '--work-dir', tmp_path / 'refused')
    assert refused.returncode != 0 and OPT_IN.format(zoo) in refused.stderr, refused.stderr[-3000:]
    assert 'Iter(test)' not in refused.stdout + refused.stderr
    output = run_tool(PYTHON, 'tools/test.py', config, zoo, '--trust-checkpoint', '--work-dir',
                      tmp_path / 'test')
    assert 'Iter(test)' in output and 'mIoU' in output

    frozen = write_tiny_config(  # the tested model, trained with a learning rate of 0
        tmp_path / 'lr0.py', DEMO, voc, train_cfg='dict(max_iters=1, val_interval=1000)',
        param_scheduler='[]', optim_wrapper='dict(optimizer=dict(lr=0.0))',
        default_hooks='dict(checkpoint=dict(interval=1))')
    refused = run(PYTHON, 'tools/train.py', frozen, '--work-dir', tmp_path / 'no',
                  '--cfg-options', f'load_from={zoo}')
    assert refused.returncode != 0 and OPT_IN.format(zoo) in refused.stderr, refused.stderr[-3000:]
    assert not (tmp_path / 'no/iter_1.pth').exists()
    run_tool(PYTHON, 'tools/train.py', frozen, '--work-dir', tmp_path / 'yes', '--cfg-options',
             f'load_from={zoo}', f'trusted_checkpoints=[{zoo}]')
    loaded = trainable(tmp_path / 'yes/iter_1.pth')  # lr 0: the loaded weights, unchanged
    state = torch.load(zoo, weights_only=False)['state_dict']
    assert loaded and all(torch.equal(v, state[k]) for k, v in loaded.items())


class CreatesFileWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_a_checkpoint_whose_pickle_runs_code_is_refused_by_the_tools(tested, tmp_path):
    _, config, checkpoint = tested
    marker, evil = tmp_path / 'code-ran', tmp_path / 'evil.pth'
    torch.save({'state_dict': torch.load(checkpoint, weights_only=True)['state_dict'],
                'payload': CreatesFileWhenUnpickled(marker)}, evil)
    force = dict(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')  # our tools pass weights_only=True
    tested_evil = run(PYTHON, 'tools/test.py', config, evil, '--work-dir', tmp_path, env=force)
    trained_evil = run(PYTHON, 'tools/train.py', config, '--work-dir', tmp_path / 'train',
                       '--cfg-options', f'load_from={evil}', 'train_cfg.max_iters=1', env=force)
    for result in (tested_evil, trained_evil):
        assert result.returncode != 0 and f'{evil} was not loaded' in result.stderr
    assert not marker.exists()
