import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from dinolora_mmseg.models import LoRABackbone, LoRALinear, fold_lora

MMSEG_VIT = dict(type='VisionTransformer', img_size=(64, 64), patch_size=16, embed_dims=64,
                 num_layers=2, num_heads=2, mlp_ratio=2, out_indices=(0, 1))
MMPRETRAIN_VIT = dict(type='mmpretrain.VisionTransformer', img_size=64, patch_size=16,
                      arch=dict(embed_dims=64, num_layers=2, num_heads=2,
                                feedforward_channels=128),
                      out_type='featmap', out_indices=(0, 1))
CASES = {
    'mmseg': (MMSEG_VIT, [r'layers\.\d+\.ffn\.layers\.0\.0', 'ffn.layers.1']),
    'mmpretrain': (MMPRETRAIN_VIT, ['attn.qkv']),
}


def build(case, **kwargs):
    init_default_scope('mmseg')
    inner, targets = CASES[case]
    torch.manual_seed(0)
    return MODELS.build(dict(type='LoRABackbone', backbone=inner,
                             lora=dict(rank=2, alpha=4, targets=targets), **kwargs))


@pytest.mark.parametrize('case', list(CASES))
def test_only_adapters_train(case):
    model = build(case)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all('.lora_' in n for n in trainable)
    expected = 2 * 2 if case == 'mmpretrain' else 2 * 2 * 2  # layers x A/B x targets
    assert len(trainable) == expected
    model.train()
    assert model.training and not model.backbone.training
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('case', list(CASES))
def test_fresh_adapters_leave_outputs_unchanged(case):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    plain = MODELS.build(CASES[case][0])
    plain.eval()  # MMSeg's ViT.train() returns None
    adapted = build(case).eval()
    adapted.backbone.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 96)
    # Frozen weights let torch's MultiheadAttention take its fused inference path,
    # which rounds differently from the path of the trainable original (~2e-7).
    for a, b in zip(plain(x), adapted(x)):
        assert (a - b).abs().max() < 1e-6


@pytest.mark.parametrize('case', list(CASES))
def test_folded_equals_adapted(case):
    model = build(case).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.lora_' in name:
                p.normal_(0, 0.3)
        x = torch.randn(1, 3, 64, 64)
        before = model(x)
        folded = fold_lora(model)
        after = folded(x)
        plain = MODELS.build(CASES[case][0])
    assert not any(isinstance(m, LoRALinear) for m in folded.modules())
    assert all((a - b).abs().max() < 1e-5 for a, b in zip(before, after))
    # the wrapped backbone's own layout: it loads into the backbone built without LoRA
    plain.load_state_dict({k.removeprefix('backbone.'): v
                           for k, v in folded.state_dict().items()})


def test_target_matching_nothing():
    with pytest.raises(ValueError, match="'attn.qkv' matches no nn.Linear of VisionTransformer"):
        MODELS.build(dict(type='LoRABackbone', backbone=MMSEG_VIT,
                          lora=dict(rank=2, targets=['attn.qkv'])))


def test_multihead_attention_output_projection_is_refused():
    with pytest.raises(ValueError, match='uses its weight directly'):
        MODELS.build(dict(type='LoRABackbone', backbone=MMSEG_VIT,
                          lora=dict(rank=2, targets=['attn.attn.out_proj'])))


def test_is_a_lora_backbone():
    assert isinstance(build('mmseg'), LoRABackbone)
