"""The benchmark's references for DINOv3 configs: timm's DINOv3 of the same size with peft
adapters that take part, the materialised attention, the model without LoRA."""
import os.path as osp

import pytest
import timm
import torch
from mmengine.config import Config

from dinolora_mmseg.benchmark import references
from dinolora_mmseg.benchmark.workloads import build_workload
from dinolora_mmseg.models import DINOv3
from dinolora_mmseg.models.utils import Attention
from tests.helpers import ROOT, write_tiny_config

CPU = torch.device('cpu')


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    """The DINOv3 demo model (LoRA rank 3 on q, v; linear head) with a 2-block, 64-wide ViT."""
    path = write_tiny_config(tmp_path_factory.mktemp('references') / 'tiny_dinov3.py',
                             osp.join(ROOT, 'configs/demo/dinov3_lora_voc_demo.py'))
    return Config.fromfile(path)


@pytest.mark.parametrize('arch', list(DINOv3.arch_zoo))
def test_timm_dinov3_has_the_size_of_ours(arch):
    """The same parameters but the key third of each qkv bias, a buffer fixed at 0 in timm;
    the 7B has no qkv bias."""
    with torch.device('meta'):
        ours = DINOv3(arch=arch)
        vit = references.timm_dinov3(timm, dict(type='DINOv3', arch=arch))
    settings = DINOv3.arch_zoo[arch]
    key_biases = settings['embed_dims'] * settings['num_layers'] * settings.get('qkv_bias', True)
    assert (sum(p.numel() for p in ours.parameters())
            == sum(p.numel() for p in vit.parameters()) + key_biases)
    assert vit.num_prefix_tokens == ours.num_prefix_tokens == 5
    assert vit.blocks[0].attn.qkv_bias_separate == settings.get('qkv_bias', True)


def test_timm_peft_adapters_take_part(config):
    """peft's adapters on timm's qkv change the logits (timm would bypass them if it fused
    the bias into the projection) and train as many parameters as ours."""
    model = references.build_timm_peft(config, (64, 64)).eval()
    assert model.backbone.patch_embed.patch_size == (16, 16)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if '.gamma_' in name:  # layer scales of 1, not timm's 1e-5: blocks that matter
                param.fill_(1)
        plain = model(x)
        assert plain.shape == (1, 21, 64, 80)
        for name, param in model.named_parameters():
            if 'lora_B' in name:
                param.normal_()
        assert (model(x) - plain).abs().max() > 1e-3
    ours = build_workload(config, 'ours', 'infer', 1, (64, 64), CPU)
    reference = build_workload(config, 'timm-peft', 'infer', 1, (64, 64), CPU)
    assert reference.params_trainable == ours.params_trainable  # rank 3 on qkv; on q and v


def test_naive_attention_computes_what_ours_does(config, monkeypatch):
    """Rotary positions included: the materialised attention gives the same logits."""
    workload = build_workload(config, 'ours', 'infer', 1, (48, 64), CPU)
    assert workload.params_trainable < workload.params_total
    from mmseg.registry import MODELS
    model = MODELS.build(config.model).eval()
    x = torch.randn(1, 3, 48, 64)
    meta = [dict(img_shape=(48, 64), pad_shape=(48, 64), ori_shape=(48, 64))]
    with torch.no_grad():
        fused = model.encode_decode(x, meta)
        monkeypatch.setattr(Attention, 'forward', references.naive_attention_forward)
        naive = model.encode_decode(x, meta)
    assert (naive - fused).abs().max() < 1e-5


def test_no_lora_workload_trains_the_head_only(config):
    ours = build_workload(config, 'ours', 'train', 1, (32, 32), CPU)
    plain = build_workload(config, 'no-lora', 'train', 1, (32, 32), CPU)
    plain.step()
    assert plain.params_total == ours.params_total - 2 * 2 * 2 * 3 * 64
    assert plain.params_trainable == 64 * 21 + 21


def test_check_reference_takes_dinov3_at_multiples_of_16(config):
    notes = references.check_reference(config, 'timm-peft', (64, 96), 'tiny_dinov3.py')
    assert any('qkv_bias_separate' in note for note in notes)
    assert not any('position embedding' in note for note in notes)
    with pytest.raises(ValueError, match='multiples of 16'):
        references.check_reference(config, 'timm-peft', (56, 56), 'tiny_dinov3.py')
    for reference in ('naive-attention', 'no-lora'):
        assert references.check_reference(config, reference, (56, 56), 'tiny_dinov3.py')


def test_check_reference_says_when_our_head_is_not_linear(config):
    """The timm-peft reference always has a 1x1-convolution head and no spatial prior."""
    notes = references.check_reference(config, 'timm-peft', (64, 96), 'tiny_dinov3.py')
    assert not any('head' in note for note in notes)
    mask2former = Config.fromfile(osp.join(ROOT, 'configs/dinov3_lora_mask2former_voc.py'))
    notes = references.check_reference(mask2former, 'timm-peft', (64, 96), 'm2f.py')
    assert ('timm-peft: its head is a 1x1 convolution on the last block; ours is ViTFPN + '
            'Float32DeformAttnMask2FormerHead, whose cost the time ratio includes') in notes
    assert not any('spatial prior' in note for note in notes)
    prior = Config.fromfile(osp.join(ROOT, 'configs/dinov3_lora_mask2former_prior_voc.py'))
    notes = references.check_reference(prior, 'timm-peft', (64, 96), 'm2f_prior.py')
    assert ('timm-peft: its backbone has no spatial prior; ours has one, whose cost the time '
            'ratio includes') in notes
