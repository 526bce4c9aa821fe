"""load_config: --cfg-options and their warnings, the registry scope, the work dir."""
import os

import pytest

from dinolora_mmseg.utils import config as config_module
from dinolora_mmseg.utils.config import load_config, runner_keys
from tests.helpers import ROOT

MAIN = os.path.join(ROOT, 'configs/dinov2_lora_voc.py')


@pytest.fixture
def logged(monkeypatch):
    messages = []
    monkeypatch.setattr(config_module, 'print_log', lambda msg, **kwargs: messages.append(msg))
    return messages


def test_options_on_plain_variables_are_named_with_the_fields_to_set(logged):
    cfg = load_config(MAIN, {'max_iters': 2})
    assert cfg.train_cfg.max_iters == 20000  # mmengine ignores it: hence the warning
    assert len(logged) == 1
    assert '--cfg-options max_iters=2 has no effect' in logged[0]
    assert 'train_cfg.max_iters, param_scheduler.1.end' in logged[0]
    load_config(MAIN, {'crop_size': (28, 28)})
    assert 'train_dataloader.dataset.pipeline.4.crop_size' in logged[1]


def test_options_on_runner_fields_are_not_warned_about(logged):
    cfg = load_config(MAIN, {'train_cfg.max_iters': 2, 'model.backbone.arch': 'small',
                             'work_dir': 'w'})
    assert cfg.train_cfg.max_iters == 2 and not logged


def test_the_runner_keys_are_read_from_the_runner():
    """Those the hand-kept list had, now found in Runner.__init__'s signature and code."""
    assert {'model', 'train_dataloader', 'env_cfg', 'randomness', 'experiment_name', 'cfg',
            'model_wrapper_cfg', 'compile', 'find_unused_parameters', 'sync_bn',
            'activation_checkpointing', 'custom_imports', 'runner_type', 'tta_model',
            'tta_pipeline'} <= runner_keys()
    assert not {'max_iters', 'crop_size', 'data_root', 'norm_cfg'} & runner_keys()


@pytest.mark.parametrize('settings, scope', [('', 'mmseg'), ("default_scope = 'mmpretrain'\n",
                                                             'mmpretrain')])
def test_config_without_default_scope_gets_mmseg(tmp_path, settings, scope):
    config = tmp_path / 'from_scratch.py'
    config.write_text(settings + "model = dict(type='EncoderDecoder')\n")
    assert load_config(str(config)).default_scope == scope


def test_the_work_dir_is_the_given_one_else_the_configs_else_named_after_it(tmp_path):
    config = tmp_path / 'named.py'
    config.write_text("model = dict(type='EncoderDecoder')\n")
    assert load_config(str(config)).work_dir == './work_dirs/named'
    assert load_config(str(config), work_dir='elsewhere').work_dir == 'elsewhere'
    config.write_text("model = dict(type='EncoderDecoder')\nwork_dir = 'mine'\n")
    assert load_config(str(config)).work_dir == 'mine'
