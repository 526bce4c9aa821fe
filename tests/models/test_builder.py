"""build_model: the registry scope, the strict, weights-only checkpoint load, eval mode."""
import os.path as osp
import pickle

import pytest
import torch

from dinolora_mmseg.models import build_model
from dinolora_mmseg.utils.config import load_config
from tests.helpers import ROOT, write_tiny_config

DEMO = osp.join(ROOT, 'configs/demo/dinov2_lora_voc_demo.py')


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
    config = write_tiny_config(tmp_path_factory.mktemp('builder') / 'tiny.py', DEMO)
    return load_config(str(config))


def test_the_checkpoint_is_loaded_with_its_dataset_meta_in_eval_mode(cfg, tmp_path):
    torch.manual_seed(0)
    trained = build_model(cfg).train()
    with torch.no_grad():
        trained.decode_head.conv_seg.weight.normal_()
    meta = dict(dataset_meta=dict(classes=['a', 'b'], palette=[[0, 0, 0], [1, 1, 1]]))
    torch.save(dict(state_dict=trained.state_dict(), meta=meta), tmp_path / 'c.pth')
    model = build_model(cfg, str(tmp_path / 'c.pth'))
    assert not model.training and model.cfg is cfg
    assert model.dataset_meta == meta['dataset_meta']
    assert torch.equal(model.decode_head.conv_seg.weight, trained.decode_head.conv_seg.weight)
    assert build_model(cfg).dataset_meta is None


def test_a_checkpoint_of_another_model_is_refused(cfg, tmp_path):
    state = build_model(cfg).state_dict()
    state['decode_head.extra.weight'] = torch.zeros(1)
    torch.save(dict(state_dict=state), tmp_path / 'other.pth')
    with pytest.raises(RuntimeError, match='unexpected key in source state_dict: '
                       'decode_head.extra.weight'):
        build_model(cfg, str(tmp_path / 'other.pth'))


class Payload:
    def __reduce__(self):
        return (print, ('this ran',))


def test_a_checkpoint_that_would_run_code_is_not_unpickled(cfg, tmp_path, capsys):
    with open(tmp_path / 'evil.pth', 'wb') as f:
        pickle.dump(dict(state_dict={}, meta=Payload()), f, protocol=2)
    with pytest.raises(ValueError, match='weights-only loading refuses'):
        build_model(cfg, str(tmp_path / 'evil.pth'))
    assert 'this ran' not in capsys.readouterr().out
