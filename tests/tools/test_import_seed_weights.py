"""Importing the original project's .pt files, built here in exactly their format."""
import contextlib
import re
import subprocess

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS
from torch import nn

from tests.helpers import PYTHON, ROOT, official_state_dict, run_tool


@contextlib.contextmanager
def storages_tagged_cuda():
    """Make ``torch.save`` record CPU tensors as living on ``cuda:0``, as the original
    files do (they were saved from a GPU); loading them then needs ``map_location``."""
    entry = (0, lambda storage: 'cuda:0' if storage.device.type == 'cpu' else None,
             lambda obj, location: None)
    torch.serialization._package_registry.insert(0, entry)
    try:
        yield
    finally:
        torch.serialization._package_registry.remove(entry)


def original_file(path, dim=384, depth=12, rank=3, classes=21, seed=0, extra=None):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(2 * depth):
        state[f'w_a_{i:03d}'] = nn.Parameter(torch.randn(rank, dim, generator=g) * 0.1)
        state[f'w_b_{i:03d}'] = nn.Parameter(torch.randn(dim, rank, generator=g) * 0.1)
    state['classifier.weight'] = nn.Parameter(torch.randn(classes, dim, 1, 1, generator=g))
    state['classifier.bias'] = nn.Parameter(torch.randn(classes, generator=g))
    state.update(extra or {})
    with storages_tagged_cuda():
        torch.save(state, path)
    return {k: v.detach() for k, v in state.items()}


def reference_logits(backbone_state, seed_state, x):
    """The original model written out: DINOv2-reg4 (timm) with q/v updates B @ A added
    to the frozen qkv weights, final norm, patch tokens, 1x1 convolution."""
    timm = pytest.importorskip('timm')
    from timm.models.vision_transformer import checkpoint_filter_fn
    state = dict(backbone_state)
    C = state['cls_token'].shape[-1]
    for block in range(12):
        w = state[f'blocks.{block}.attn.qkv.weight'].clone()
        for part, rows in ((0, slice(0, C)), (1, slice(2 * C, 3 * C))):
            i = 2 * block + part
            w[rows] += seed_state[f'w_b_{i:03d}'] @ seed_state[f'w_a_{i:03d}']
        state[f'blocks.{block}.attn.qkv.weight'] = w
    H, W = x.shape[-2:]
    model = timm.create_model('vit_small_patch14_reg4_dinov2', pretrained=False,
                              num_classes=0, img_size=(H, W))
    model.load_state_dict(checkpoint_filter_fn(state, model))
    with torch.no_grad():
        tokens = model.eval().forward_features(x)[:, 5:]
    patches = tokens.transpose(1, 2).reshape(x.shape[0], C, H // 14, W // 14)
    return F.conv2d(patches, seed_state['classifier.weight'], seed_state['classifier.bias'])


def test_plain_load_needs_cuda_but_the_tool_does_not(tmp_path):
    original_file(tmp_path / 'large_voc_lora.pt', dim=1024, depth=24)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='CUDA'):
            torch.load(tmp_path / 'large_voc_lora.pt', weights_only=True)
    output = run_tool(PYTHON, 'tools/import_seed_weights.py', tmp_path / 'large_voc_lora.pt',
                      tmp_path / 'out.pth')
    assert 'ViT-large (24 blocks), LoRA rank 3, 21 classes' in output
    assert f'tools/test.py configs/dinov2_lora_voc.py {tmp_path / "out.pth"}' in output
    state = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    assert len(state) == 24 * 4 + 2
    assert state['backbone.blocks.23.attn.qkv.lora_B.v'].shape == (1024, 3)


def test_imported_model_equals_the_original_forward(tmp_path):
    backbone_state = official_state_dict(384, 12, 4)
    torch.save(backbone_state, tmp_path / 'dinov2_vits14_reg4_pretrain.pth')
    seed_state = original_file(tmp_path / 'small_voc_lora.pt')
    output = run_tool(PYTHON, 'tools/import_seed_weights.py', tmp_path / 'small_voc_lora.pt',
                      tmp_path / 'small_voc_lora.pth')
    assert 'model.backbone.arch=small model.decode_head.in_channels=384' in output

    cfg = Config.fromfile(f'{ROOT}/configs/dinov2_lora_voc.py')
    init_default_scope('mmseg')
    cfg.model.backbone.update(arch='small',
                              pretrained=str(tmp_path / 'dinov2_vits14_reg4_pretrain.pth'))
    cfg.model.decode_head.in_channels = 384
    model = MODELS.build(cfg.model).eval()
    load_checkpoint(model, str(tmp_path / 'small_voc_lora.pth'), map_location='cpu', strict=True)
    x = torch.randn(2, 3, 224, 280)
    with torch.no_grad():
        ours = model.decode_head(model.backbone(x))
    reference = reference_logits(backbone_state, seed_state, x)
    assert ours.shape == reference.shape == (2, 21, 16, 20)
    assert (ours - reference).abs().max() < 1e-4


def test_linear_only_file_points_to_the_linear_config(tmp_path):
    path = tmp_path / 'large_ade20k_no_lora.pt'
    state = {'classifier.weight': torch.randn(150, 1024, 1, 1), 'classifier.bias': torch.randn(150)}
    torch.save(state, path)
    output = run_tool(PYTHON, 'tools/import_seed_weights.py', path, tmp_path / 'out.pth')
    assert 'configs/dinov2_linear_ade20k.py' in output


@pytest.mark.parametrize('extra, message', [
    ({'fpn.lateral.weight': torch.zeros(2)}, "unexpected keys \\['fpn.lateral.weight'\\]"),
    ({'w_a_005': torch.zeros(4, 384)}, 'w_a_005 has shape \\(4, 384\\), expected \\(3, 384\\)'),
    ({'w_a_030': torch.zeros(3, 384)}, "extra \\['w_a_030'\\]"),
])
def test_unexpected_content_is_refused(tmp_path, extra, message):
    path = tmp_path / 'bad.pt'
    original_file(path, extra=extra)
    result = subprocess.run([PYTHON, 'tools/import_seed_weights.py', path, tmp_path / 'out.pth'],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert str(path) in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / 'out.pth').exists()
