import os
import subprocess

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.runner import CheckpointLoader

from dinolora_mmseg.engine.checkpoint_io import find_resumable_checkpoint
from dinolora_mmseg.models import DINOv2
from tests.helpers import PYTHON, ROOT, TINY


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
    with pytest.raises(RuntimeError, match='evil.pth was not loaded'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()


def test_importer_refuses_code(evil):
    path, marker = evil
    result = subprocess.run([PYTHON, 'tools/import_seed_weights.py', path, path.parent / 'o.pth'],
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
