import errno
import os
import os.path as osp
import pickle
import re
import subprocess

import numpy as np
import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader
from safetensors.torch import save_file

from dinolora_mmseg.engine.checkpoint_io import (find_resumable_checkpoint,
                                                register_atomic_local_backend)
from dinolora_mmseg.models import DINOv2
from dinolora_mmseg.utils import load_weights, weights
from dinolora_mmseg.utils.checkpoint_file import is_trusted, read_checkpoint
from dinolora_mmseg.utils.integrity import save_safetensors, verify_safetensors
from tests.helpers import (PYTHON, ROOT, TINY, corrupt_a_tensor, official_state_dict,
                           write_tiny_config)

DEMO = 'configs/demo/dinov2_lora_voc_demo.py'


class CreatesFileWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture
def evil(tmp_path):
    """A .pth whose pickle would create ``marker`` if anything unpickled it fully."""
    marker = tmp_path / 'code-ran'
    path = tmp_path / 'evil.pth'
    torch.save({'cls_token': torch.zeros(1, 1, 64), 'payload': CreatesFileWhenUnpickled(marker)},
               path)
    return path, marker


def test_dinov2_pretrained_refuses_code(evil, monkeypatch):
    path, marker = evil
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')  # explicit weights_only wins
    with pytest.raises(ValueError, match='evil.pth is not a plain weight file'):
        DINOv2(arch=TINY, pretrained=str(path))
    assert not marker.exists()


def test_our_reader_refuses_code_and_names_the_opt_in(evil, monkeypatch):
    path, marker = evil
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(ValueError, match=r'evil.pth was not loaded.*trusted_checkpoints in the '
                                         r'config.*--trust-checkpoint'):
        read_checkpoint(str(path))
    assert not marker.exists()


# Run in a fresh interpreter: what MMEngine has registered before and after the import.
REGISTRIES = """
import sys
from mmengine.fileio.backends import registry_utils
from mmengine.runner import CheckpointLoader
def registries():
    return [dict(CheckpointLoader._schemes), dict(registry_utils.backends),
            dict(registry_utils.prefix_to_backends)]
def same(before, after):
    return all(b.keys() == a.keys() and all(b[k] is a[k] for k in b)
               for b, a in zip(before, after))
before = registries()
import dinolora_mmseg
from dinolora_mmseg.engine.hooks import AtomicCheckpointHook
imported = registries()
AtomicCheckpointHook(interval=1)
built = registries()
new = set(built[1]) - set(imported[1])
print(same(before, imported), same(imported[:1] + imported[2:], built[:1] + built[2:]),
      sorted(new), built[1]['local'].__module__)
"""


def test_importing_the_package_leaves_mmengine_loaders_and_backends_alone():
    result = subprocess.run([PYTHON, '-c', REGISTRIES], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    # the checkpoint hook adds a backend under its own name; 'local' stays MMEngine's
    assert result.stdout.split() == [
        'True', 'True', "['dinolora_atomic_local']", 'mmengine.fileio.backends.local_backend']


def stock_mmseg_checkpoint(path):
    """What a stock mmengine run saves: HistoryBuffers and numpy values in meta and hub."""
    losses = HistoryBuffer()
    losses.update(np.float64(0.5))
    torch.save({'meta': {'mmseg_version': '1.2.2', 'iter': 80000, 'lr': np.float64(1e-4),
                         'hist': losses},
                'state_dict': {'w': torch.ones(3)},
                'message_hub': {'log_scalars': {'train/loss': losses}, 'runtime_info': {}}},
               path)
    return path


def test_trusted_checkpoints_is_a_list_of_paths(tmp_path):
    from mmengine.config import Config
    cfg = Config(dict(trusted_checkpoints=[str(tmp_path / 'sub' / '..' / 'zoo.pth')]))
    assert is_trusted(cfg, str(tmp_path / 'zoo.pth'))
    assert not is_trusted(cfg, str(tmp_path / 'other.pth'))
    assert not is_trusted(Config(), str(tmp_path / 'zoo.pth'))  # nothing is trusted by default
    with pytest.raises(TypeError, match='trusted_checkpoints must be a list of checkpoint paths'):
        is_trusted(Config(dict(trusted_checkpoints=str(tmp_path / 'zoo.pth'))), 'zoo.pth')


def test_a_checkpoint_url_is_read_from_the_hub_cache_and_trusted_by_its_url(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    (tmp_path / 'checkpoints').mkdir()
    stock_mmseg_checkpoint(tmp_path / 'checkpoints' / 'zoo.pth')
    url = 'https://download.example.org/mmseg/zoo.pth'
    with pytest.raises(ValueError, match=re.escape(f'trusted_checkpoints=[{url}]')):
        read_checkpoint(url)
    assert isinstance(read_checkpoint(url, trusted=True)['meta']['hist'], HistoryBuffer)


def test_with_the_package_imported_mmengine_loads_as_stock(tmp_path, monkeypatch):
    path = stock_mmseg_checkpoint(tmp_path / 'zoo.pth')
    with pytest.raises(pickle.UnpicklingError):  # torch's default: weights only
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.warns(UserWarning, match='TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected'):
        checkpoint = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert isinstance(checkpoint['meta']['hist'], HistoryBuffer)


def test_a_trusted_stock_checkpoint_is_read_in_full(tmp_path):
    path = stock_mmseg_checkpoint(tmp_path / 'zoo.pth')
    hint = re.escape(f'--cfg-options trusted_checkpoints=[{path}]) or pass --trust-checkpoint')
    with pytest.raises(ValueError, match=f'{re.escape(str(path))} was not loaded.*{hint}'):
        read_checkpoint(str(path))
    checkpoint = read_checkpoint(str(path), trusted=True)
    assert isinstance(checkpoint['meta']['hist'], HistoryBuffer)
    assert torch.equal(checkpoint['state_dict']['w'], torch.ones(3))


def test_importer_refuses_code(evil):
    path, marker = evil
    importer = 'tools/model_converters/dinov2_finetune2mmseg.py'
    result = subprocess.run([PYTHON, importer, path, path.parent / 'o.pth'],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and 'not a plain weight file' in result.stderr
    assert not marker.exists()


def test_damaged_checkpoint_is_named(tmp_path):
    path = tmp_path / 'iter_4.pth'
    torch.save({'state_dict': {'w': torch.zeros(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(RuntimeError, match='iter_4.pth is damaged'):
        read_checkpoint(str(path))


def test_local_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / 'iter_2.pth'
    backend = get_file_backend(backend_args=dict(backend=register_atomic_local_backend()))
    backend.put(b'complete', str(target))

    def killed(fd):
        raise KeyboardInterrupt('killed while saving')

    monkeypatch.setattr(os, 'fsync', killed)
    with pytest.raises(KeyboardInterrupt):
        backend.put(b'half of a new checkpoint', str(target))
    assert target.read_bytes() == b'complete'
    assert os.listdir(tmp_path) == ['iter_2.pth']


def test_a_full_disk_names_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / 'iter_2.pth'
    backend = get_file_backend(backend_args=dict(backend=register_atomic_local_backend()))
    backend.put(b'complete', str(target))

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, 'fsync', full)
    with pytest.raises(OSError, match=f'No space left on device while writing {target}') as error:
        backend.put(b'a new checkpoint', str(target))
    assert error.value.errno == errno.ENOSPC
    assert target.read_bytes() == b'complete'
    assert os.listdir(tmp_path) == ['iter_2.pth']


def test_resume_skips_a_damaged_last_checkpoint(tmp_path):
    for it in (2, 4):
        torch.save({'state_dict': {}}, tmp_path / f'iter_{it}.pth')
    damaged = tmp_path / 'iter_6.pth'
    damaged.write_bytes((tmp_path / 'iter_4.pth').read_bytes()[:-40])
    (tmp_path / 'last_checkpoint').write_text(str(damaged))
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    (tmp_path / 'last_checkpoint').write_text('')
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    assert find_resumable_checkpoint(str(tmp_path / 'empty')) is None


def test_a_corrupted_tensor_is_refused_everywhere_it_loads(tmp_path):
    official = official_state_dict(64, 3)
    path = tmp_path / 'iter_8.pth'
    torch.save({'state_dict': official}, path)
    torch.save({'state_dict': official}, tmp_path / 'iter_4.pth')
    corrupt_a_tensor(path)
    torch.load(path, weights_only=True)  # torch does not notice: the zip is intact
    with pytest.raises(RuntimeError, match=r'iter_8.pth is damaged.*Bad CRC-32'):
        read_checkpoint(str(path))
    with pytest.raises(RuntimeError, match=r'iter_8.pth is damaged.*Bad CRC-32'):
        load_weights(str(path))
    with pytest.raises(RuntimeError, match=r'iter_8.pth is damaged.*Bad CRC-32'):
        DINOv2(arch=TINY, pretrained=str(path))
    (tmp_path / 'last_checkpoint').write_text(str(path))
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')


def test_files_saved_without_checksums_still_load(tmp_path):
    path = tmp_path / 'no_crc.pth'
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({'w': torch.ones(100)}, path)
    finally:
        torch.serialization.set_crc32_options(True)
    assert load_weights(str(path))['w'].sum() == 100


def test_safetensors_written_here_carry_a_checksum(tmp_path):
    tensors = {'w': torch.randn(64, 64), 'b': torch.arange(7)}
    ours, foreign = tmp_path / 'ours.safetensors', tmp_path / 'foreign.safetensors'
    save_safetensors(tensors, str(ours))
    save_file(tensors, str(foreign))
    assert verify_safetensors(str(ours)) and not verify_safetensors(str(foreign))
    for path in (ours, foreign):
        loaded = load_weights(str(path))
        assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    data = bytearray(ours.read_bytes())
    data[-100] ^= 0xFF
    ours.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match='ours.safetensors is damaged: its tensor data does '
                                           'not match the CRC-32'):
        load_weights(str(ours))
    with pytest.raises(RuntimeError, match='ours.safetensors is damaged'):
        read_checkpoint(str(ours))


def test_a_renamed_pth_is_not_taken_for_safetensors(tmp_path):
    path = tmp_path / 'weights.safetensors'
    torch.save({'w': torch.ones(3)}, path)
    with pytest.raises(ValueError, match='weights.safetensors is named .safetensors but is not '
                                         r'a safetensors file: it is a zip-format torch file'):
        load_weights(str(path))


@pytest.mark.parametrize('wrap', [
    lambda s: {'model': s, 'optimizer': {}, 'iteration': torch.tensor(5)},
    lambda s: {'teacher': {**{f'backbone.{k}': v for k, v in s.items()},
                           'dino_head.mlp.0.weight': torch.zeros(8, 64)}},
    lambda s: {'state_dict': {f'module.backbone.{k}': v for k, v in s.items()}, 'meta': {}},
    lambda s: {'model': {**{f'teacher.backbone.{k}': v for k, v in s.items()},
                         **{f'student.backbone.{k}': -v for k, v in s.items()}}},
], ids=['model', 'teacher-with-head', 'ddp-state_dict', 'dinov2-training'])
def test_official_weights_wrapped_by_a_training_framework_load(tmp_path, monkeypatch, wrap):
    official = official_state_dict(64, 3)
    path = tmp_path / 'wrapped.pth'
    torch.save(wrap(official), path)
    logged = []
    monkeypatch.setattr(weights, 'print_log', lambda message, **kwargs: logged.append(message))
    backbone = DINOv2(arch=TINY, pretrained=str(path))
    assert torch.equal(backbone.blocks[1].attn.qkv.weight, official['blocks.1.attn.qkv.weight'])
    assert logged and all(str(path) in line for line in logged)


def test_weights_nested_where_no_wrapper_is_known_say_where_they_are(tmp_path):
    path = tmp_path / 'ema.pth'
    torch.save({'ema': {'net': {'w': torch.ones(1), 'b': torch.ones(1)}}, 'step': 3}, path)
    with pytest.raises(ValueError, match=r"ema.pth does not hold a flat dict of name -> tensor, "
                                         r"at the top or under \['state_dict', 'model', "
                                         r"'teacher'\]; tensors were found under: 'ema.net' \(2\)"):
        load_weights(str(path))


def test_merge_and_export_refuse_code(evil, tmp_path, monkeypatch):
    from mmengine.config import Config

    from dinolora_mmseg.deployment.segmentor_graph import build_deploy_segmentor
    path, marker = evil
    config = write_tiny_config(tmp_path / 'c.py', osp.join(ROOT, DEMO))
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(ValueError, match='evil.pth was not loaded'):
        build_deploy_segmentor(Config.fromfile(config), str(path))
    result = subprocess.run([PYTHON, 'tools/model_converters/merge_lora.py', config, path,
                             tmp_path / 'merged.pth'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and 'evil.pth was not loaded' in result.stderr
    assert not marker.exists()
