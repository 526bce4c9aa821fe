import os.path as osp
import subprocess

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS

from dinolora_mmseg.models import DINOv2
from dinolora_mmseg.utils.integrity import verify_safetensors
from tests.helpers import PYTHON, ROOT, official_state_dict, run_tool, write_tiny_config

DEMO = osp.join(ROOT, 'configs/demo/dinov2_lora_voc_demo.py')
TOOL = 'tools/model_converters/merge_lora.py'


def build(config, **backbone):
    cfg = Config.fromfile(config)
    init_default_scope('mmseg')
    cfg.model.backbone.update(backbone)
    return MODELS.build(cfg.model).eval()


def logits(model, x):
    with torch.no_grad():
        return model.decode_head(model.backbone(x))


@pytest.fixture(scope='module')
def lora_checkpoint(tmp_path_factory):
    """A tiny LoRA model on an official-layout pretrained file, adapters and head random."""
    root = tmp_path_factory.mktemp('merge')
    weights = root / 'dinov2_tiny_reg4.pth'
    torch.save(official_state_dict(64, 2, 4), weights)
    config = write_tiny_config(root / 'tiny.py', DEMO)
    config.write_text(config.read_text().replace('pretrained=None', f"pretrained='{weights}'"))
    model = build(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.2)
    torch.save(dict(state_dict=model.state_dict()), root / 'lora.pth')
    return root, config, model


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_merged_checkpoint_predicts_the_same_without_lora(lora_checkpoint, fmt):
    root, config, model = lora_checkpoint
    out = root / f'merged.{fmt}'
    run_tool(PYTHON, TOOL, config, root / 'lora.pth', out, '--format', fmt)
    if fmt == 'safetensors':
        assert verify_safetensors(str(out))  # it carries a checksum, checked where it loads
    merged = build(config, lora=None)
    load_checkpoint(merged, str(out), map_location='cpu', strict=True)
    x = torch.randn(2, 3, 70, 98)
    reference = logits(model, x)
    assert (logits(merged, x) - reference).abs().max() < 1e-5
    assert (logits(build(config, lora=None), x) - reference).abs().max() > 1e-3  # LoRA mattered


def test_backbone_only_export_is_the_official_layout(lora_checkpoint):
    root, config, model = lora_checkpoint
    out = root / 'backbone.pth'
    run_tool(PYTHON, TOOL, config, root / 'lora.pth', out, '--backbone-only')
    state = torch.load(out, weights_only=True)
    assert set(state) == set(official_state_dict(64, 2, 4))
    backbone = DINOv2(arch=dict(embed_dims=64, num_layers=2, num_heads=2),
                      num_register_tokens=4, pretrained=str(out)).eval()
    x = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        assert (backbone(x)[0] - model.backbone(x)[0]).abs().max() < 1e-5


def test_nothing_to_merge(lora_checkpoint, tmp_path):
    root, config, _ = lora_checkpoint
    plain = tmp_path / 'plain.py'
    plain.write_text(f"_base_ = '{config}'\nmodel = dict(backbone=dict(lora=None))\n")
    result = subprocess.run([PYTHON, TOOL, plain, root / 'lora.pth',
                             tmp_path / 'out.pth'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert 'builds a model without LoRA adapters: nothing to merge' in result.stderr
    assert not (tmp_path / 'out.pth').exists()
