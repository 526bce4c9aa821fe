import os.path as osp
import subprocess

import pytest
import timm
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from timm.models.eva import checkpoint_filter_fn

from dinolora_mmseg.models import DINOv2, DINOv3
from dinolora_mmseg.utils.checkpoint_file import load_checkpoint_to_model
from dinolora_mmseg.utils.integrity import verify_safetensors
from tests.helpers import (PYTHON, ROOT, official_dinov3_state_dict, official_state_dict,
                           run_tool, write_tiny_config)

TOOL = 'tools/model_converters/merge_lora.py'
TINY = dict(embed_dims=64, num_layers=2, num_heads=2)
# family: (demo config, its official-layout pretrained tensors)
FAMILIES = dict(
    dinov2=('configs/demo/dinov2_lora_voc_demo.py', lambda: official_state_dict(64, 2, 4)),
    dinov3=('configs/demo/dinov3_lora_voc_demo.py', lambda: official_dinov3_state_dict(**TINY)))


def build(config, **backbone):
    cfg = Config.fromfile(config)
    init_default_scope('mmseg')
    cfg.model.backbone.update(backbone)
    return MODELS.build(cfg.model).eval()


def logits(model, x):
    with torch.no_grad():
        return model.decode_head(model.backbone(x))


@pytest.fixture(scope='module', params=list(FAMILIES))
def lora_checkpoint(tmp_path_factory, request):
    """A tiny LoRA model of each family on an official-layout pretrained file, adapters and
    head random."""
    root = tmp_path_factory.mktemp(f'merge_{request.param}')
    demo, official = FAMILIES[request.param]
    weights = root / f'{request.param}_tiny.pth'
    torch.save(official(), weights)
    config = write_tiny_config(root / 'tiny.py', osp.join(ROOT, demo))
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
    load_checkpoint_to_model(merged, str(out))  # strict; .safetensors too
    x = torch.randn(2, 3, 70, 98)  # padded by the backbone to multiples of its patches
    reference = logits(model, x)
    assert (logits(merged, x) - reference).abs().max() < 1e-5
    assert (logits(build(config, lora=None), x) - reference).abs().max() > 1e-3  # LoRA mattered


def official_backbone(family, path):
    """Our backbone of ``family`` built on the official-layout file at ``path``."""
    if family == 'dinov2':
        return DINOv2(arch=TINY, num_register_tokens=4, pretrained=str(path)).eval()
    return DINOv3(arch=TINY, pretrained=str(path)).eval()


def timm_features(state, family, x):
    """Final-normed patch tokens of timm's model of ``family`` loaded from the
    official-layout ``state`` (through timm's own filter of official files)."""
    if family == 'dinov2':
        from timm.models.vision_transformer import checkpoint_filter_fn as filter_dinov2
        vit = timm.create_model('vit_small_patch14_reg4_dinov2', pretrained=False, num_classes=0,
                                img_size=x.shape[-1], embed_dim=64, depth=2, num_heads=2)
        vit.load_state_dict(filter_dinov2(dict(state), vit))
    else:
        vit = timm.create_model('vit_small_patch16_dinov3_qkvb', pretrained=False, num_classes=0,
                                embed_dim=64, depth=2, num_heads=2)
        vit.load_state_dict(checkpoint_filter_fn(dict(state), vit))
        vit.rope.periods.copy_(state['rope_embed.periods'].float())  # timm computes its own
    with torch.no_grad():
        tokens = vit.eval().forward_features(x)[:, vit.num_prefix_tokens:]
    p = vit.patch_embed.patch_size[0]
    return tokens.transpose(1, 2).reshape(1, -1, x.shape[2] // p, x.shape[3] // p)


def test_backbone_only_export_is_the_official_layout(lora_checkpoint):
    root, config, model = lora_checkpoint
    family = type(model.backbone).family.lower()
    out = root / 'backbone.pth'
    output = run_tool(PYTHON, TOOL, config, root / 'lora.pth', out, '--backbone-only')
    assert f'official {model.backbone.family} layout' in output
    state = torch.load(out, weights_only=True)
    official = FAMILIES[family][1]()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in official.items()}
    # DINOv2 at the trained 37 x 37 grid, which timm's position embedding equals ours at
    side = 518 if family == 'dinov2' else 112
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        merged = model.backbone(x)[0]
        assert (official_backbone(family, out)(x)[0] - merged).abs().max() < 1e-5
        # the adapters are in the file: the pretrained weights alone give other features
        pretrained = official_backbone(family, root / f'{family}_tiny.pth')
        assert (pretrained(x)[0] - merged).abs().max() > 1e-3
    assert (timm_features(state, family, x) - merged).abs().max() < 1e-4


def test_nothing_to_merge(lora_checkpoint, tmp_path):
    root, config, _ = lora_checkpoint
    plain = tmp_path / 'plain.py'
    plain.write_text(f"_base_ = '{config}'\nmodel = dict(backbone=dict(lora=None))\n")
    result = subprocess.run([PYTHON, TOOL, plain, root / 'lora.pth',
                             tmp_path / 'out.pth'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert 'builds a model without LoRA adapters: nothing to merge' in result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_spatial_prior_stays_in_the_merged_checkpoint_and_is_named_when_left_out(tmp_path):
    """A LoRA + spatial prior + FPN model: the merged file predicts what it predicts without
    LoRA; ``--backbone-only`` writes the official layout and says that the prior is not in it."""
    weights = tmp_path / 'tiny_reg4.pth'
    torch.save(official_state_dict(64, 2, 4), weights)
    config = tmp_path / 'prior_fpn.py'
    config.write_text('\n'.join([
        f"_base_ = '{osp.join(ROOT, 'configs/dinov2_lora_fpn_voc.py')}'",
        'model = dict(',
        "    backbone=dict(arch=dict(_delete_=True, embed_dims=64, num_layers=2, num_heads=2),",
        f"                  out_indices=(0, 1, 1, 1), pretrained='{weights}',",
        '                  spatial_prior=dict(channels=8)),',
        '    neck=dict(in_channels=64, out_channels=16, prior_channels=(8, 16, 32, 32)),',
        '    decode_head=dict(in_channels=[16] * 4, channels=8))']) + '\n')
    model = build(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name.startswith('backbone.spatial_prior.') and 'running_var' in name:
                tensor.uniform_(0.5, 1.5)
            elif tensor.requires_grad or 'running_mean' in name:
                tensor.normal_(0, 0.2)
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'lora.pth')

    def full_logits(segmentor, x):
        with torch.no_grad():
            return segmentor.decode_head(segmentor.neck(segmentor.backbone(x)))

    run_tool(PYTHON, TOOL, config, tmp_path / 'lora.pth', tmp_path / 'merged.pth')
    merged = build(config, lora=None)
    load_checkpoint_to_model(merged, str(tmp_path / 'merged.pth'))
    x = torch.randn(2, 3, 56, 84)
    reference = full_logits(model, x)
    assert (full_logits(merged, x) - reference).abs().max() < 1e-5
    without_prior = {k: v for k, v in merged.state_dict().items()
                     if not k.startswith('backbone.spatial_prior.')}
    again = build(config, lora=None)
    again.load_state_dict(without_prior, strict=False)
    assert (full_logits(again, x) - reference).abs().max() > 1e-3  # the prior mattered

    output = run_tool(PYTHON, TOOL, config, tmp_path / 'lora.pth', tmp_path / 'backbone.pth',
                      '--backbone-only')
    count = sum(p.numel() for p in model.backbone.spatial_prior.parameters())
    assert f'spatial prior ({count:,} parameters) is left out' in output
    state = torch.load(tmp_path / 'backbone.pth', weights_only=True)
    assert state.keys() == official_state_dict(64, 2, 4).keys()
