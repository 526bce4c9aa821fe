"""DINOv3 against the official models: features, sizes, RoPE, the checkpoint layout."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from timm.models.eva import checkpoint_filter_fn

from dinolora_mmseg.models import DINOv3
from dinolora_mmseg.models.utils import RopePositionEmbedding
from tests.helpers import official_dinov3_shapes, official_dinov3_state_dict

TINY3 = dict(embed_dims=64, num_layers=3, num_heads=2)
# name: (official-layout settings, timm model, our arch)
ARCHS = {
    'small': (dict(embed_dims=384, num_layers=12, num_heads=6),
              'vit_small_patch16_dinov3_qkvb', 'small'),
    'small_plus': (dict(embed_dims=384, num_layers=12, num_heads=6, swiglu=True, mlp_ratio=6.0),
                   'vit_small_plus_patch16_dinov3_qkvb', 'small_plus'),
    'base': (dict(embed_dims=768, num_layers=12, num_heads=12), None, 'base'),
    'large': (dict(embed_dims=1024, num_layers=24, num_heads=16), None, 'large'),
    'huge_plus': (dict(embed_dims=1280, num_layers=32, num_heads=20, swiglu=True,
                       mlp_ratio=6.0), 'vit_huge_plus_patch16_dinov3_qkvb', 'huge_plus'),
    '7b': (dict(embed_dims=4096, num_layers=40, num_heads=32, swiglu=True, mlp_ratio=3.0,
                swiglu_align=64, qkv_bias=False, local_cls_norm=True),
           'vit_7b_patch16_dinov3', '7b'),
}
TRAINING_ONLY = ('mask_token', 'local_cls_norm.weight', 'local_cls_norm.bias')


def reduced(name, num_layers):
    """``name``'s official settings and our arch dict with ``num_layers`` blocks."""
    official, timm_name, arch = ARCHS[name]
    ours = dict(DINOv3.arch_zoo[arch], num_layers=num_layers)
    return dict(official, num_layers=num_layers), timm_name, ours


def timm_reference(timm_name, state, num_layers):
    """timm's DINOv3 loaded from the official-layout ``state``.

    timm computes the RoPE periods in float32 instead of loading them; the official
    model uses the file's (bfloat16-rounded) ones, so they are copied in.
    """
    model = timm.create_model(timm_name, pretrained=False, num_classes=0, depth=num_layers)
    model.load_state_dict(checkpoint_filter_fn(dict(state), model))
    model.rope.periods.copy_(state['rope_embed.periods'].float())
    return model.eval()


def timm_features(model, x):
    """Final-normed patch tokens of a timm DINOv3 as ``(B, C, H / 16, W / 16)`` maps."""
    with torch.no_grad():
        tokens = model.forward_features(x)
    H, W = x.shape[-2:]
    return tokens[:, 5:].transpose(1, 2).reshape(x.shape[0], -1, H // 16, W // 16)


@pytest.mark.parametrize('name, num_layers', [('small', 12), ('small_plus', 12),
                                              ('huge_plus', 2), ('7b', 2)])
def test_features_equal_timm_reference(tmp_path, name, num_layers):
    official, timm_name, arch = reduced(name, num_layers)
    state = official_dinov3_state_dict(**official, seed=num_layers)
    torch.save(state, tmp_path / 'w.pth')
    model = DINOv3(arch=arch, pretrained=str(tmp_path / 'w.pth')).eval()
    reference = timm_reference(timm_name, state, num_layers)
    for H, W in [(512, 512), (224, 224), (320, 480)]:
        x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(H + W))
        with torch.no_grad():
            ours, = model(x)
        ref = timm_features(reference, x)
        assert ours.shape == ref.shape == (1, official['embed_dims'], H // 16, W // 16)
        assert (ours - ref).abs().max() < 1e-4, (H, W)


def test_the_files_rope_periods_are_used(tmp_path):
    """Released files hold the periods rounded to bfloat16; the official model uses them
    (timm's own float32 periods give other features)."""
    official, timm_name, arch = reduced('small', 2)
    state = official_dinov3_state_dict(**official)
    torch.save(state, tmp_path / 'w.pth')
    model = DINOv3(arch=arch, pretrained=str(tmp_path / 'w.pth')).eval()
    assert model.rope_embed.periods.dtype == torch.float32
    assert torch.equal(model.rope_embed.periods, state['rope_embed.periods'].float())
    assert not torch.equal(model.rope_embed.periods, model.rope_embed.default_periods())
    x = torch.randn(1, 3, 64, 96)
    reference = timm_reference(timm_name, state, 2)
    with torch.no_grad():
        ours = model(x)[0]
    assert (ours - timm_features(reference, x)).abs().max() < 1e-5
    reference.rope.periods.copy_(model.rope_embed.default_periods())
    assert (ours - timm_features(reference, x)).abs().max() > 1e-4
    del state['rope_embed.periods']  # a file without them: computed from base 100
    torch.save(state, tmp_path / 'no_periods.pth')
    model = DINOv3(arch=arch, pretrained=str(tmp_path / 'no_periods.pth'))
    assert torch.equal(model.rope_embed.periods, model.rope_embed.default_periods())


@pytest.mark.parametrize('name', list(ARCHS))
def test_parameter_count_matches_official_layout(name):
    """Ours: the official model's parameters except the training-only ``mask_token`` and
    ``local_cls_norm``; its buffers are the RoPE periods (each ``bias_mask`` is applied)."""
    official, _, arch = ARCHS[name]
    shapes = official_dinov3_shapes(**official)
    with torch.device('meta'):
        model = DINOv3(arch=arch)
    buffers = {k for k in shapes if k.endswith(('bias_mask', 'periods'))}
    expected = sum(math.prod(s) for k, s in shapes.items()
                   if k not in TRAINING_ONLY and k not in buffers)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert {k: tuple(v.shape) for k, v in model.state_dict().items() if k != '_extra_state'} == {
        k: s for k, s in shapes.items() if k not in TRAINING_ONLY and 'bias_mask' not in k}
    assert {k: tuple(v.shape) for k, v in model.official_state_dict().items()} == shapes


def test_known_sizes():
    """ViT-S/16: 21,600,768 parameters, summed by hand from the layer shapes (official
    README: 21M; +384 with ``mask_token``); ViT-7B/16: 6,716,030,976 (README: 6,716M;
    timm's ``vit_7b_patch16_dinov3`` has as many)."""
    with torch.device('meta'):
        small, huge = DINOv3(arch='small'), DINOv3(arch='7b')
    assert sum(p.numel() for p in small.parameters()) == 21_600_768
    assert sum(p.numel() for p in huge.parameters()) == 6_716_030_976
    assert huge.blocks[0].mlp.w3.in_features == 8192 and huge.blocks[0].attn.qkv.bias is None
    assert small.blocks[0].norm1.eps == 1e-5 and small.num_prefix_tokens == 5
    assert small.patch_size == 16


def official_rope(periods, h, w, normalize):
    """The official ``RopePositionEmbedding.forward`` in evaluation, written out."""
    side = dict(separate=(h, w), max=(max(h, w), ) * 2, min=(min(h, w), ) * 2)[normalize]
    rows = torch.arange(0.5, h) / side[0]
    cols = torch.arange(0.5, w) / side[1]
    coords = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1).reshape(-1, 2) * 2 - 1
    angles = (2 * math.pi * coords[:, :, None] / periods).reshape(h * w, -1).repeat(1, 2)
    return torch.sin(angles), torch.cos(angles)


@pytest.mark.parametrize('normalize', ['separate', 'min', 'max'])
@pytest.mark.parametrize('grid', [(32, 32), (20, 30), (7, 3)])
def test_rope_is_official(normalize, grid):
    rope = RopePositionEmbedding(384, 6, normalize_coords=normalize).eval()
    assert torch.allclose(rope.periods, 100**(torch.arange(16) / 16))
    for ours, theirs in zip(rope(*grid), official_rope(rope.periods, *grid, normalize)):
        assert ours.shape == (grid[0] * grid[1], 64)
        assert (ours - theirs).abs().max() < 1e-6


def test_rope_periods_from_min_and_max():
    rope = RopePositionEmbedding(64, 2, base=None, min_period=0.5, max_period=40.0)
    assert torch.allclose(rope.periods, 0.5 * 80**torch.linspace(0, 1, 8))


def test_rope_tables_kept_for_the_last_grid_and_periods():
    rope = RopePositionEmbedding(64, 2).eval()
    first = rope(4, 6)
    assert all(a is b for a, b in zip(rope(4, 6), first))  # reused
    for grid in [(5, 6), (4, 6)]:  # another grid, then the first again: recomputed
        tables = rope(*grid)
        assert all(torch.equal(a, b) for a, b in
                   zip(tables, official_rope(rope.periods, *grid, 'separate')))
    rope.load_state_dict(dict(periods=rope.periods * 2))  # in place: same storage
    assert all(torch.equal(a, b) for a, b in
               zip(rope(4, 6), official_rope(rope.periods, 4, 6, 'separate')))
    assert not torch.equal(rope(4, 6)[0], first[0])


def test_rope_tables_from_inference_mode_serve_training():
    model = DINOv3(arch=TINY3, frozen=False, lora=dict(rank=2, targets=('q', )))
    x = torch.randn(1, 3, 48, 64)
    with torch.inference_mode():
        expected = model.eval()(x)[0]
    assert not model.rope_embed(3, 4)[0].is_inference()
    out = model.train()(x)[0]
    out.sum().backward()  # would fail on inference tensors saved for backward
    assert torch.allclose(out, expected, atol=1e-6)


def test_rope_tables_not_kept_while_augmenting():
    rope = RopePositionEmbedding(64, 2, rescale_coords=2.0).train()
    torch.manual_seed(0)
    assert not torch.equal(rope(4, 6)[0], rope(4, 6)[0])


def test_rope_once_per_forward_and_augmented_only_when_asked():
    model = DINOv3(arch=TINY3, frozen=False).train()
    calls = []
    model.rope_embed.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(1, 3, 48, 64)
    assert torch.equal(model(x)[0], model(x)[0])  # training, but no augmentation asked for
    assert len(calls) == 2  # once per forward, not once per block
    augmented = DINOv3(arch=TINY3, frozen=False, rope_cfg=dict(rescale_coords=2.0))
    augmented.load_state_dict(model.state_dict())
    assert not torch.equal(augmented.train()(x)[0], augmented(x)[0])
    assert torch.equal(augmented.eval()(x)[0], model.eval()(x)[0])
    frozen = DINOv3(arch=TINY3, rope_cfg=dict(rescale_coords=2.0)).train()
    assert torch.equal(frozen(x)[0], frozen(x)[0])  # frozen: eval mode, no augmentation


@pytest.mark.parametrize('bad, message', [
    (dict(embed_dims=60, num_layers=1, num_heads=2), 'multiple of 4 \\* num_heads'),
    (dict(TINY3, ffn_type='geglu'), 'ffn_type must be one of'),
    ('giant', "choose one of \\['7b', 'base'"),
])
def test_bad_archs(bad, message):
    with pytest.raises(ValueError, match=message):
        DINOv3(arch=bad)


def test_key_bias_is_masked_as_the_file_says(tmp_path):
    state = official_dinov3_state_dict(64, 3, 2)
    torch.save(state, tmp_path / 'masked.pth')
    model = DINOv3(arch=TINY3, pretrained=str(tmp_path / 'masked.pth'))
    bias = model.blocks[1].attn.qkv.bias
    assert torch.equal(bias, state['blocks.1.attn.qkv.bias'] * state['blocks.1.attn.qkv.bias_mask'])
    assert bias[64:128].abs().max() == 0 and bias[:64].abs().min() > 0
    for key in [k for k in state if k.endswith('bias_mask')]:
        del state[key]
    torch.save(state, tmp_path / 'unmasked.pth')
    assert torch.equal(DINOv3(arch=TINY3, pretrained=str(tmp_path / 'unmasked.pth'))
                       .blocks[1].attn.qkv.bias, bias)


def test_training_only_tensors_are_ignored_and_others_named(tmp_path):
    state = official_dinov3_state_dict(64, 3, 2, local_cls_norm=True)
    torch.save(state, tmp_path / 'w.pth')
    DINOv3(arch=TINY3, pretrained=str(tmp_path / 'w.pth'))  # mask_token, local_cls_norm
    torch.save(official_dinov3_state_dict(64, 3, 2, swiglu=True), tmp_path / 'swiglu.pth')
    with pytest.raises(ValueError) as error:
        DINOv3(arch=TINY3, pretrained=str(tmp_path / 'swiglu.pth'))
    assert "missing keys: ['blocks.0.mlp.fc1.bias'" in str(error.value)
    assert "unexpected keys: ['blocks.0.mlp.w1.bias'" in str(error.value)
    assert "ffn_type='mlp'" in str(error.value)


def test_wrong_size_checkpoint_names_key_and_shapes(tmp_path):
    torch.save(official_dinov3_state_dict(96, 3, 2), tmp_path / 'wide.pth')
    with pytest.raises(ValueError) as error:
        DINOv3(arch=TINY3, pretrained=str(tmp_path / 'wide.pth'))
    assert 'storage_tokens: checkpoint (1, 4, 96) vs model (1, 4, 64)' in str(error.value)
    assert 'rope_embed.periods: checkpoint (12,) vs model (8,)' in str(error.value)


def test_safetensors_and_pth_give_identical_models(tmp_path):
    import safetensors.torch as safetensors
    state = official_dinov3_state_dict(64, 3, 2)
    torch.save(state, tmp_path / 'w.pth')
    safetensors.save_file(state, str(tmp_path / 'w.safetensors'))
    a = DINOv3(arch=TINY3, pretrained=str(tmp_path / 'w.pth'))
    b = DINOv3(arch=TINY3, pretrained=str(tmp_path / 'w.safetensors'))
    tensors = [dict(m.named_parameters(), **dict(m.named_buffers())) for m in (a, b)]
    assert tensors[0].keys() == tensors[1].keys()
    for key, value in tensors[0].items():
        assert torch.equal(value, tensors[1][key]), key
    # Identified by their files' content, cheaply: another format is another file
    assert a.frozen_weights.fingerprint != b.frozen_weights.fingerprint


class CreatesFileWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.mark.parametrize('frozen_dtype', ['float32', 'bfloat16'])  # read, or memory-mapped
def test_pretrained_refuses_code(tmp_path, monkeypatch, frozen_dtype):
    marker = tmp_path / 'code-ran'
    torch.save({'cls_token': torch.zeros(1, 1, 64), 'x': CreatesFileWhenUnpickled(marker)},
               tmp_path / 'evil.pth')
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(ValueError, match='evil.pth is not a plain weight file'):
        DINOv3(arch=TINY3, pretrained=str(tmp_path / 'evil.pth'), frozen_dtype=frozen_dtype)
    assert not marker.exists()


def test_official_filenames():
    assert DINOv3.official_filename('large', 'sat493m') == (
        'dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth')
    with pytest.raises(ValueError, match="No official DINOv3 'small' checkpoint"):
        DINOv3.official_filename('small', 'sat493m')


def test_non_multiple_inputs_are_padded_bottom_right():
    model = DINOv3(arch=TINY3).eval()
    x = torch.randn(2, 3, 100, 130)
    out, = model(x)
    assert out.shape == (2, 64, 7, 9)  # ceil(100/16), ceil(130/16)
    assert torch.equal(out, model(F.pad(x, (0, 144 - 130, 0, 112 - 100)))[0])
    with pytest.raises(ValueError, match='smaller than one 16x16 patch'):
        model(torch.zeros(1, 3, 15, 100))


def test_registered_in_mmseg():
    model = MODELS.build(dict(type='DINOv3', arch=TINY3, out_indices=(0, 2)))
    assert isinstance(model, DINOv3) and model.storage_tokens.shape == (1, 4, 64)
    assert [o.shape for o in model(torch.randn(1, 3, 32, 48))] == [(1, 64, 2, 3)] * 2
