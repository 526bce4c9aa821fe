import errno
import os
import subprocess

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.runner import CheckpointLoader
from safetensors.torch import save_file

from dinolora_mmseg.engine.checkpoint_io import find_resumable_checkpoint
from dinolora_mmseg.models import DINOv2
from dinolora_mmseg.utils import load_weights, weights
from dinolora_mmseg.utils.integrity import save_safetensors, verify_safetensors
from tests.helpers import PYTHON, ROOT, TINY, corrupt_a_tensor, official_state_dict


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


def test_load_from_refuses_code(evil, monkeypatch):
    path, marker = evil
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(ValueError, match='evil.pth was not loaded'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()


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
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def test_local_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / 'iter_2.pth'
    backend = get_file_backend(str(target))
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
    backend = get_file_backend(str(target))
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
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
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
        CheckpointLoader.load_checkpoint(str(ours), map_location='cpu')


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
