import logging
import math
import os
import urllib.error
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from dinolora_mmseg.models import DINOv2
from dinolora_mmseg.models.backbones import dino_vit_base
from dinolora_mmseg.engine.hooks import PretrainedRecordHook
from dinolora_mmseg.utils.integrity import content_fingerprint
from tests.helpers import TINY, official_shapes, official_state_dict

ARCHS = {'small': (384, 12, False), 'base': (768, 12, False),
         'large': (1024, 24, False), 'giant': (1536, 40, True)}


def official_pos_embed(pos_embed, H, W, antialias, offset):
    """The official ``interpolate_pos_encoding`` for an H x W pixel input, written out."""
    N = pos_embed.shape[1] - 1
    M = int(math.sqrt(N))
    h0, w0 = H // 14, W // 14
    if h0 * w0 == N and H == W:
        return pos_embed
    patch = pos_embed[:, 1:].float().reshape(1, M, M, -1).permute(0, 3, 1, 2)
    if offset:
        kwargs = dict(scale_factor=(float(h0 + offset) / M, float(w0 + offset) / M))
    else:
        kwargs = dict(size=(h0, w0))
    patch = F.interpolate(patch, mode='bicubic', antialias=antialias, **kwargs)
    assert patch.shape[-2:] == (h0, w0)
    patch = patch.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
    return torch.cat([pos_embed[:, :1], patch], dim=1)


def timm_features(state, embed_dims, depth, num_heads, reg, swiglu, x):
    """Final-normed patch tokens of timm's DINOv2, position embedding resized officially."""
    from timm.models.vision_transformer import checkpoint_filter_fn
    H, W = x.shape[-2:]
    name = 'vit_giant_patch14' if swiglu else 'vit_small_patch14'
    name += '_reg4_dinov2' if reg else '_dinov2'
    model = timm.create_model(name, pretrained=False, num_classes=0, img_size=(H, W),
                              embed_dim=embed_dims, depth=depth, num_heads=num_heads)
    state = dict(state, pos_embed=official_pos_embed(state['pos_embed'], H, W,
                                                     antialias=bool(reg),
                                                     offset=0.0 if reg else 0.1))
    model.load_state_dict(checkpoint_filter_fn(state, model))
    with torch.no_grad():
        tokens = model.eval().forward_features(x)
    return tokens[:, 1 + reg:].transpose(1, 2).reshape(x.shape[0], -1, H // 14, W // 14)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Official-layout checkpoints: ViT-S and a 2-block ViT-g, each with and without registers."""
    root = tmp_path_factory.mktemp('dinov2')
    files = {}
    for name, (C, depth, heads, swiglu) in {'small': (384, 12, 6, False),
                                             'giant2': (1536, 2, 24, True)}.items():
        for reg in (0, 4):
            path = root / f'{name}_reg{reg}.pth'
            torch.save(official_state_dict(C, depth, reg, swiglu, seed=reg), path)
            files[name, reg] = (path, dict(embed_dims=C, num_layers=depth, num_heads=heads,
                                           ffn_type='swiglu' if swiglu else 'mlp'))
    return files


@pytest.mark.parametrize('name', ['small', 'giant2'])
@pytest.mark.parametrize('reg', [0, 4])
def test_features_equal_timm_reference(checkpoints, name, reg):
    path, arch = checkpoints[name, reg]
    model = DINOv2(arch=arch, num_register_tokens=reg, pretrained=str(path)).eval()
    state = torch.load(path, weights_only=True)
    for H, W in [(518, 518), (224, 224), (280, 420)]:
        x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(H + W))
        with torch.no_grad():
            ours, = model(x)
        ref = timm_features(state, arch['embed_dims'], arch['num_layers'],
                            arch['num_heads'], reg, arch['ffn_type'] == 'swiglu', x)
        assert ours.shape == ref.shape == (2, arch['embed_dims'], H // 14, W // 14)
        assert (ours - ref).abs().max() < 1e-4, (H, W)


@pytest.mark.parametrize('reg', [0, 4])
@pytest.mark.parametrize('size', [(518, 518), (224, 224), (280, 420), (630, 182), (14, 14)])
def test_pos_embed_interpolation_is_official(reg, size):
    model = DINOv2(arch=TINY, num_register_tokens=reg)
    H, W = size
    ours = model.interpolate_pos_encoding(H // 14, W // 14)
    ref = official_pos_embed(model.pos_embed, H, W, antialias=bool(reg),
                             offset=0.0 if reg else 0.1)
    assert torch.equal(ours, ref)


def test_reg4_interpolation_equals_timm_resample():
    model = DINOv2(arch=TINY, num_register_tokens=4)
    patch_pos = model.pos_embed[:, 1:]
    theirs = timm.layers.resample_abs_pos_embed(
        patch_pos, new_size=(20, 30), old_size=(37, 37), num_prefix_tokens=0,
        interpolation='bicubic', antialias=True)
    assert torch.allclose(model.interpolate_pos_encoding(20, 30)[:, 1:], theirs, atol=1e-6)


def test_original_interpolation_uses_offset():
    model = DINOv2(arch=TINY)
    with_offset = model.interpolate_pos_encoding(16, 16)
    model.interpolate_offset = 0.0
    assert not torch.allclose(with_offset, model.interpolate_pos_encoding(16, 16))


@pytest.mark.parametrize('arch', list(ARCHS))
@pytest.mark.parametrize('reg', [0, 4])
def test_parameter_count_matches_official_layout(arch, reg):
    C, depth, swiglu = ARCHS[arch]
    shapes = official_shapes(C, depth, reg, swiglu)
    expected = sum(math.prod(s) for k, s in shapes.items() if k != 'mask_token')
    with torch.device('meta'):
        model = DINOv2(arch=arch, num_register_tokens=reg)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()
            } == {k: s for k, s in shapes.items() if k != 'mask_token'}


def test_known_sizes():
    """ViT-S/14 has 22,056,192 parameters and ViT-g/14 1,136,479,232 (summed by hand
    from the layer shapes, position embedding at 37x37, ``mask_token`` left out)."""
    with torch.device('meta'):
        small, giant = DINOv2(arch='small'), DINOv2(arch='giant')
    assert sum(p.numel() for p in small.parameters()) == 22_056_192
    assert sum(p.numel() for p in giant.parameters()) == 1_136_479_232
    assert giant.blocks[0].mlp.w3.in_features == 4096


def test_out_indices_order_and_shapes():
    model = DINOv2(arch=TINY, out_indices=(2, 0, -2)).eval()
    x = torch.randn(1, 3, 70, 98)
    outs = model(x)
    assert [o.shape for o in outs] == [(1, 64, 5, 7)] * 3
    last, first, middle = outs
    model.out_indices = (0, 1, 2)
    assert torch.equal(model(x)[0], first) and torch.equal(model(x)[1], middle)


def test_blocks_after_the_last_output_do_not_run():
    model = DINOv2(arch=TINY, out_indices=(0, 1, 2)).eval()
    ran = []
    for index, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda *_, index=index: ran.append(index))
    x = torch.randn(1, 3, 42, 56)
    everything = model(x)
    assert ran == [0, 1, 2]
    ran.clear()
    model.out_indices = (1, 0)
    assert torch.equal(model(x)[0], everything[1]) and torch.equal(model(x)[1], everything[0])
    assert ran == [0, 1] * 2


@pytest.mark.parametrize('bad', [3, -4, (0, 5)])
def test_out_indices_outside_depth(bad):
    with pytest.raises(ValueError, match='outside the 3 blocks'):
        DINOv2(arch=TINY, out_indices=bad)


def test_non_multiple_inputs_are_padded_bottom_right():
    model = DINOv2(arch=TINY).eval()
    x = torch.randn(2, 3, 100, 130)
    out, = model(x)
    assert out.shape == (2, 64, 8, 10)  # ceil(100/14), ceil(130/14)
    padded = F.pad(x, (0, 140 - 130, 0, 112 - 100))
    assert torch.equal(out, model(padded)[0])


@pytest.mark.parametrize('size', [(13, 100), (100, 0)])
def test_input_smaller_than_a_patch(size):
    with pytest.raises(ValueError, match='smaller than one 14x14 patch'):
        DINOv2(arch=TINY)(torch.zeros(1, 3, *size))


def test_frozen_by_default_and_stays_in_eval():
    model = DINOv2(arch=dict(TINY, num_layers=2), drop_path_rate=0.5)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert model.training and not model.blocks[1].training
    x = torch.randn(1, 3, 28, 28)
    assert torch.equal(model(x)[0], model(x)[0])  # no stochastic depth while frozen


def test_unfrozen_trains_everything():
    model = DINOv2(arch=TINY, frozen=False, drop_path_rate=0.1).train()
    assert all(p.requires_grad for p in model.parameters())
    assert model.blocks[2].training


def test_safetensors_and_pth_give_identical_models(tmp_path):
    import safetensors.torch as safetensors
    state = official_state_dict(64, 3, 4)
    torch.save(state, tmp_path / 'w.pth')
    safetensors.save_file(state, str(tmp_path / 'w.safetensors'))
    a = DINOv2(arch=TINY, num_register_tokens=4, pretrained=str(tmp_path / 'w.pth'))
    b = DINOv2(arch=TINY, num_register_tokens=4, pretrained=str(tmp_path / 'w.safetensors'))
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), k
    assert torch.equal(a.pos_embed, state['pos_embed'])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        DINOv2(arch=TINY, pretrained=str(tmp_path / 'nowhere.pth'))


def test_unreachable_url_says_where_to_put_the_file(monkeypatch, tmp_path):
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError('no network')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    url = DINOv2.official_url('small', 4)
    assert url.endswith('dinov2_vits14/dinov2_vits14_reg4_pretrain.pth')
    with pytest.raises(FileNotFoundError) as error:
        DINOv2(arch='small', num_register_tokens=4, pretrained=url)
    expected = tmp_path / 'hub' / 'checkpoints' / 'dinov2_vits14_reg4_pretrain.pth'
    assert str(expected) in str(error.value)


def test_wrong_size_checkpoint_names_key_and_shapes(tmp_path):
    torch.save(official_state_dict(96, 3), tmp_path / 'other.pth')
    with pytest.raises(ValueError) as error:
        DINOv2(arch=TINY, pretrained=str(tmp_path / 'other.pth'))
    assert 'cls_token: checkpoint (1, 1, 96) vs model (1, 1, 64)' in str(error.value)


def test_checkpoint_without_registers_for_reg4_model(tmp_path):
    torch.save(official_state_dict(64, 3, 0), tmp_path / 'noreg.pth')
    with pytest.raises(ValueError, match="missing keys: \\['register_tokens'\\]"):
        DINOv2(arch=TINY, num_register_tokens=4, pretrained=str(tmp_path / 'noreg.pth'))


@pytest.mark.parametrize('arch', ['huge', dict(embed_dims=64)])
def test_unknown_arch(arch):
    with pytest.raises(ValueError, match='arch'):
        DINOv2(arch=arch)


def test_registered_in_mmseg():
    model = MODELS.build(dict(type='DINOv2', arch=TINY, num_register_tokens=4))
    assert isinstance(model, DINOv2) and model.register_tokens.shape == (1, 4, 64)


def save_checkpoint(model):
    """A checkpoint of ``model`` as the Runner writes it, through the record hook."""
    checkpoint = dict(meta={}, state_dict=model.state_dict())
    PretrainedRecordHook().before_save_checkpoint(SimpleNamespace(model=model), checkpoint)
    return checkpoint


def load_checkpoint(model, checkpoint, strict=True):
    """Load ``checkpoint`` as the Runner does (``load_from``, ``tools/test.py``,
    ``--resume``): the record hook first, then the state dict."""
    PretrainedRecordHook().after_load_checkpoint(SimpleNamespace(model=model), checkpoint)
    return model.load_state_dict(checkpoint['state_dict'], strict=strict)


def test_checkpoints_leave_out_weights_the_pretrained_file_restores(tmp_path):
    torch.save(official_state_dict(64, 3), tmp_path / 'w.pth')
    lora = dict(rank=2, alpha=2, targets=('q', 'v'))
    model = DINOv2(arch=TINY, pretrained=str(tmp_path / 'w.pth'), lora=lora)
    saved = save_checkpoint(model)
    assert set(saved['state_dict']) == {f'blocks.{i}.attn.qkv.lora_{m}.{t}'
                                        for i in range(3) for m in 'AB' for t in 'qv'}
    assert saved['meta']['pretrained_weights'] == {'': dict(
        pretrained=str(tmp_path / 'w.pth'), fingerprint=content_fingerprint(tmp_path / 'w.pth'))}
    fresh = DINOv2(arch=TINY, pretrained=str(tmp_path / 'w.pth'), lora=lora)
    result = fresh.load_state_dict(saved['state_dict'])  # strict: the file has the rest
    assert result.missing_keys == [] and result.unexpected_keys == []
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)


def test_a_checkpoint_without_a_trainable_key_is_refused_strictly(tmp_path):
    torch.save(official_state_dict(64, 3), tmp_path / 'w.pth')
    model = DINOv2(arch=TINY, pretrained=str(tmp_path / 'w.pth'), lora=LORA)
    state = model.state_dict()
    del state['blocks.1.attn.qkv.lora_B.v']
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: '
                       r'"blocks.1.attn.qkv.lora_B.v"'):
        model.load_state_dict(state)
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert missing == ['blocks.1.attn.qkv.lora_B.v']  # the frozen weights are not listed


def test_random_init_checkpoints_carry_the_backbone():
    model = DINOv2(arch=TINY, lora=dict(rank=2, targets=('q', )))
    assert 'blocks.0.attn.qkv.weight' in model.state_dict()
    other = DINOv2(arch=TINY, lora=dict(rank=2, targets=('q', )))
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.pos_embed, model.pos_embed)


@pytest.fixture
def two_pretrained_files(tmp_path):
    """Two official-layout files of the same shapes and different weights."""
    paths = []
    for seed, name in enumerate(('trained_on.pth', 'other.pth')):
        torch.save(official_state_dict(64, 3, seed=seed), tmp_path / name)
        paths.append(str(tmp_path / name))
    return paths


LORA = dict(rank=2, alpha=2, targets=('q', 'v'))


def test_adapters_trained_on_other_pretrained_weights_are_refused(two_pretrained_files):
    trained_on, other = two_pretrained_files
    saved = save_checkpoint(DINOv2(arch=TINY, pretrained=trained_on, lora=LORA))
    with pytest.raises(ValueError) as error:
        load_checkpoint(DINOv2(arch=TINY, pretrained=other, lora=LORA), saved)
    assert f'trained on the pretrained weights {trained_on}' in str(error.value)
    assert f'this model loaded {other}' in str(error.value)
    load_checkpoint(DINOv2(arch=TINY, pretrained=trained_on, lora=LORA), saved)
    # the same tensors under another name are the same weights
    copy = os.path.join(os.path.dirname(trained_on), 'copy.pth')
    torch.save(torch.load(trained_on), copy)
    load_checkpoint(DINOv2(arch=TINY, pretrained=copy, lora=LORA), saved)
    # an explicit override loads them anyway
    load_checkpoint(DINOv2(arch=TINY, pretrained=other, lora=LORA, verify_pretrained=False),
                    saved)


def test_a_pretrained_file_changed_in_place_is_fingerprinted_again(two_pretrained_files):
    trained_on, other = two_pretrained_files
    saved = save_checkpoint(DINOv2(arch=TINY, pretrained=trained_on, lora=LORA))
    os.replace(other, trained_on)  # other weights at the same path
    with pytest.raises(ValueError, match='other weights'):
        load_checkpoint(DINOv2(arch=TINY, pretrained=trained_on, lora=LORA), saved)


def test_adapters_without_their_pretrained_weights_are_refused(two_pretrained_files):
    """Loaded leniently (as ``load_from`` does), the left-out frozen weights would stay
    random without a word."""
    saved = save_checkpoint(DINOv2(arch=TINY, pretrained=two_pretrained_files[0], lora=LORA))
    with pytest.raises(ValueError, match='this model has pretrained=None'):
        load_checkpoint(DINOv2(arch=TINY, lora=LORA), saved, strict=False)


def test_checkpoints_from_before_records_still_load(two_pretrained_files):
    model = DINOv2(arch=TINY, pretrained=two_pretrained_files[0], lora=LORA)
    saved = save_checkpoint(model)
    del saved['meta']['pretrained_weights']
    load_checkpoint(DINOv2(arch=TINY, pretrained=two_pretrained_files[0], lora=LORA), saved)
    # nor does the record they kept in the state dict then get in the way
    saved['state_dict']['_extra_state'] = torch.zeros(8, dtype=torch.uint8)
    load_checkpoint(DINOv2(arch=TINY, pretrained=two_pretrained_files[0], lora=LORA), saved)


def test_tensors_of_another_shape_are_refused_naming_key_and_shapes():
    wide = DINOv2(arch=dict(TINY, embed_dims=96)).state_dict()
    with pytest.raises(ValueError, match=r'cls_token: the checkpoint has shape \(1, 1, 96\), '
                       r'the model \(1, 1, 64\)'):
        DINOv2(arch=TINY).load_state_dict(wide, strict=False)


def test_adapters_of_another_rank_are_refused_naming_key_and_shapes():
    rank4 = DINOv2(arch=TINY, lora=dict(LORA, rank=4)).state_dict()
    with pytest.raises(ValueError, match=r'blocks.0.attn.qkv.lora_A.q: the checkpoint has '
                       r'shape \(4, 64\), the model \(2, 64\)'):
        DINOv2(arch=TINY, lora=LORA).load_state_dict(rank4, strict=False)


def test_adapters_only_on_blocks_that_run():
    model = DINOv2(arch=TINY, out_indices=(0, 1), lora=LORA)
    adapted = {n.split('.')[1] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {'0', '1'}
    with pytest.raises(ValueError, match=r'LoRA layers \[2\] come after block 1'):
        DINOv2(arch=TINY, out_indices=(0, 1), lora=dict(LORA, layers=[1, 2]))


def test_self_padding_warns_once(monkeypatch):
    logged = []
    monkeypatch.setattr(dino_vit_base, 'print_log',
                        lambda msg, **kwargs: logged.append((msg, kwargs)))
    model = DINOv2(arch=TINY).eval()
    model(torch.randn(1, 3, 28, 30))
    model(torch.randn(1, 3, 28, 30))
    model(torch.randn(1, 3, 28, 28))
    warnings = [(m, k) for m, k in logged if 'not a multiple of the patch size' in m]
    assert len(warnings) == 1
    message, kwargs = warnings[0]
    assert kwargs['level'] == logging.WARNING
    assert 'padded to 28x42' in message and 'size_divisor=14' in message
