"""DINOv3 fine-tuning: LoRA, frozen weights, checkpoints, bfloat16, memory, export."""
import gc
import os
import subprocess
import textwrap

import pytest
import timm
import torch
from timm.models.eva import checkpoint_filter_fn
from torch import nn

from dinolora_mmseg.models import DINOv3, LoRALinear, fold_lora
from dinolora_mmseg.models.backbones import frozen_pretrained
from dinolora_mmseg.models.backbones.frozen_pretrained import (check_pretrained_records,
                                                               pretrained_records)
from tests.helpers import PYTHON, ROOT, official_dinov3_state_dict

TINY3 = dict(embed_dims=64, num_layers=3, num_heads=2)
SWIGLU = dict(TINY3, ffn_type='swiglu', mlp_ratio=6.0)
LORA = dict(rank=2, alpha=2, targets=('q', 'v'))


@pytest.fixture
def pretrained(tmp_path):
    """An official-layout file of the tiny SwiGLU arch."""
    path = tmp_path / 'dinov3_tiny_pretrain.pth'
    torch.save(official_dinov3_state_dict(64, 3, 2, swiglu=True, mlp_ratio=6.0), path)
    return str(path)


def randomise_adapters(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.lora_' in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_lora_targets_include_the_swiglu_layers(pretrained):
    model = DINOv3(arch=SWIGLU, pretrained=pretrained,
                   lora=dict(rank=2, targets=('k', 'proj', 'fc1', 'fc2')))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f'blocks.{i}.{m}.lora_{ab}.{t}' for i in range(3) for ab in 'AB'
                         for m, t in [('attn.qkv', 'k'), ('attn.proj', 'proj'),
                                      ('mlp.w1', 'fc1'), ('mlp.w2', 'fc1'), ('mlp.w3', 'fc2')]}
    assert model.blocks[0].attn.qkv.parts == {'k': (64, 128)}


@pytest.mark.parametrize('arch', [TINY3, dict(SWIGLU, qkv_bias=False, swiglu_align=64)])
def test_fresh_adapters_and_folding(arch):
    plain = DINOv3(arch=arch).eval()
    adapted = DINOv3(arch=arch, lora=dict(rank=3, targets=('q', 'v', 'fc1', 'fc2'))).eval()
    adapted.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 3, 48, 64)
    assert torch.equal(plain(x)[0], adapted(x)[0])
    randomise_adapters(adapted)
    weight = adapted.blocks[1].attn.qkv.weight.clone()
    folded = fold_lora(adapted)
    with torch.no_grad():
        unfolded = adapted(x)[0]
        assert not torch.equal(folded.blocks[1].attn.qkv.weight, weight)
        assert (folded(x)[0] - unfolded).abs().max() < 1e-5
        assert (unfolded - plain(x)[0]).abs().max() > 1e-2
    assert torch.equal(adapted.blocks[1].attn.qkv.weight, weight)
    plain.load_state_dict(folded.state_dict())  # the layout of the model without LoRA


def test_frozen_by_default_and_only_adapters_train(pretrained):
    model = DINOv3(arch=SWIGLU, pretrained=pretrained, lora=LORA, drop_path_rate=0.5).train()
    assert model.training and not model.blocks[1].training
    x = torch.randn(1, 3, 32, 32)
    model(x)[0].sum().backward()
    assert all((p.grad is None) != p.requires_grad for p in model.parameters())
    assert torch.equal(model(x)[0], model(x)[0])  # no stochastic depth while frozen


def test_unfrozen_training_keeps_the_key_bias_at_zero():
    model = DINOv3(arch=TINY3, frozen=False).train()
    assert all(p.requires_grad for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 32, 48))[0].square().mean().backward()
    optimizer.step()
    bias = model.blocks[0].attn.qkv.bias
    assert bias[64:128].abs().max() == 0 and bias[:64].abs().min() > 0


def test_checkpoints_hold_only_what_trains(pretrained):
    model = DINOv3(arch=SWIGLU, pretrained=pretrained, lora=LORA)
    randomise_adapters(model)
    saved = dict(meta={'pretrained_weights': pretrained_records(model)},
                 state_dict=model.state_dict())
    assert set(saved['state_dict']) == {f'blocks.{i}.attn.qkv.lora_{m}.{t}'
                                        for i in range(3) for m in 'AB' for t in 'qv'}
    assert saved['meta']['pretrained_weights']['']['pretrained'] == pretrained
    fresh = DINOv3(arch=SWIGLU, pretrained=pretrained, lora=LORA)
    fresh.load_state_dict(saved['state_dict'])  # strict: frozen weights, periods from the file
    x = torch.randn(1, 3, 32, 48)
    assert torch.equal(fresh.eval()(x)[0], model.eval()(x)[0])
    other = pretrained.replace('tiny', 'other')
    torch.save(official_dinov3_state_dict(64, 3, 2, seed=1, swiglu=True, mlp_ratio=6.0), other)
    with pytest.raises(ValueError, match='trained on the pretrained weights'):
        check_pretrained_records(DINOv3(arch=SWIGLU, pretrained=other, lora=LORA), saved)
    with pytest.raises(ValueError, match='this model has pretrained=None'):
        DINOv3(arch=SWIGLU, lora=LORA).load_state_dict(saved['state_dict'], strict=False)


def test_activation_checkpointing_gives_the_same_gradients():
    model = DINOv3(arch=TINY3, lora=dict(rank=3, targets=('q', 'v'))).train()
    randomise_adapters(model)
    x, weights = torch.randn(2, 3, 48, 32), torch.randn(2, 64, 3, 2)

    def grads():
        model.zero_grad(set_to_none=True)
        (model(x)[0] * weights).sum().backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain = grads()
    model.with_cp = True
    checkpointed = grads()
    for name, grad in plain.items():
        assert grad.abs().max() > 0 and (grad - checkpointed[name]).abs().max() < 1e-6, name


def test_the_pretrained_file_becomes_the_weights_without_a_copy(pretrained, monkeypatch):
    """The model is built on the meta device (random init allocates nothing) and the
    loaded tensors themselves become its parameters."""
    loaded, init_devices = {}, set()
    load = frozen_pretrained.load_weights
    monkeypatch.setattr(frozen_pretrained, 'load_weights',
                        lambda *args, **kwargs: loaded.setdefault('state', load(*args, **kwargs)))
    trunc_normal = nn.init.trunc_normal_
    monkeypatch.setattr(nn.init, 'trunc_normal_', lambda t, *args, **kwargs: (
        init_devices.add(t.device.type), trunc_normal(t, *args, **kwargs))[1])
    model = DINOv3(arch=SWIGLU, pretrained=pretrained)
    assert init_devices == {'meta'}
    for name in ('blocks.2.mlp.w1.weight', 'cls_token', 'patch_embed.proj.weight'):
        assert model.get_parameter(name).data_ptr() == loaded['state'][name].data_ptr(), name


def test_float32_weights_stay_mapped_from_the_file(tmp_path):
    """Without a cast the parameters are the file's pages (shared by every process that
    maps the file: the ranks of a run share the page cache); cast to bfloat16 they are
    copies, and the mapping is gone."""
    torch.save(official_dinov3_state_dict(64, 3, 2), tmp_path / 'mapped.pth')

    def mapped():
        with open('/proc/self/maps') as f:
            return str(tmp_path / 'mapped.pth') in f.read()

    model = DINOv3(arch=TINY3, pretrained=str(tmp_path / 'mapped.pth'))
    assert mapped()
    del model
    gc.collect()
    assert not mapped()
    half = DINOv3(arch=TINY3, pretrained=str(tmp_path / 'mapped.pth'), frozen_dtype='bfloat16')
    gc.collect()
    assert not mapped() and half.cls_token.dtype == torch.bfloat16


def test_building_from_a_file_maps_it_instead_of_copying(tmp_path):
    """Peak resident memory of building ViT-B/16 from its 0.32 GiB file (in a fresh
    process): the file is mapped, not copied (under 0.2x the file; a copy, as
    before, peaked at 1.00x; building random weights and loading the file into them
    peaks at 2x)."""
    path = tmp_path / 'dinov3_vitb16_pretrain.pth'
    torch.save(official_dinov3_state_dict(768, 12, 12), path)
    script = textwrap.dedent(f'''
        from dinolora_mmseg.models import DINOv3

        def peak():
            return next(int(line.split()[1]) * 1024 for line in open('/proc/self/status')
                        if line.startswith('VmHWM'))

        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # peak resident memory := current
        before = peak()
        DINOv3(arch='base', pretrained={str(path)!r})
        print(peak() - before)''')
    result = subprocess.run([PYTHON, '-c', script], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, 'PYTHONPATH': ROOT})
    assert result.returncode == 0, result.stderr
    ratio = int(result.stdout.split()[-1]) / os.path.getsize(path)
    assert ratio < 0.2, ratio


def test_bfloat16_frozen_weights_with_float32_adapters(pretrained):
    full = DINOv3(arch=SWIGLU, pretrained=pretrained, lora=dict(rank=3, targets=('q', 'fc2')))
    half = DINOv3(arch=SWIGLU, pretrained=pretrained, lora=dict(rank=3, targets=('q', 'fc2')),
                  frozen_dtype='bfloat16')
    assert half.frozen_weights.fingerprint == full.frozen_weights.fingerprint
    dtypes = {(p.requires_grad, p.dtype) for p in half.parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    assert half.rope_embed.periods.dtype == torch.float32
    assert torch.equal(half.blocks[0].mlp.w3.weight, full.blocks[0].mlp.w3.weight.bfloat16())
    randomise_adapters(full)
    half.load_state_dict(full.state_dict())
    x, weights = torch.randn(2, 3, 48, 64), torch.randn(2, 64, 3, 4)
    outputs, grads = [], []
    for model in (full.train(), half.train()):
        out = model(x)[0]
        (out * weights).sum().backward()
        outputs.append(out)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    assert outputs[1].dtype == grads[1].dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: measured 0.4 % (outputs) and 1 % (gradients)
    assert 0 < (outputs[1] - outputs[0]).norm() / outputs[0].norm() < 3e-2
    assert 0 < (grads[1] - grads[0]).norm() / grads[0].norm() < 5e-2
    # Inference folds the float32 adapters into copies of the bfloat16 weights.
    with torch.no_grad():
        folded = half.eval()(x)[0]
    assert folded.dtype == torch.float32
    assert (folded - outputs[1]).norm() / outputs[1].norm() < 3e-2
    with pytest.raises(ValueError, match='frozen_dtype must be one of'):
        DINOv3(arch=TINY3, frozen=False, frozen_dtype='bfloat16')


def test_bfloat16_from_a_legacy_format_file(tmp_path):
    """Files written by torch's legacy serialisation cannot be memory-mapped: read them."""
    state = official_dinov3_state_dict(64, 3, 2)
    torch.save(state, tmp_path / 'legacy.pth', _use_new_zipfile_serialization=False)
    model = DINOv3(arch=TINY3, pretrained=str(tmp_path / 'legacy.pth'), frozen_dtype='bfloat16')
    assert torch.equal(model.cls_token, state['cls_token'].bfloat16())


def test_official_export_holds_the_merged_adapters(pretrained, tmp_path):
    model = DINOv3(arch=SWIGLU, pretrained=pretrained,
                   lora=dict(rank=2, targets=('qkv', 'fc1'))).eval()
    randomise_adapters(model)
    exported = model.official_state_dict()
    original = torch.load(pretrained, weights_only=True)
    assert exported.keys() == original.keys()
    assert torch.equal(exported['blocks.0.attn.qkv.bias_mask'],
                       original['blocks.0.attn.qkv.bias_mask'])
    torch.save(exported, tmp_path / 'merged.pth')
    merged = DINOv3(arch=SWIGLU, pretrained=str(tmp_path / 'merged.pth')).eval()
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert (merged(x)[0] - model(x)[0]).abs().max() < 1e-5
    reference = timm.create_model('vit_small_plus_patch16_dinov3_qkvb', embed_dim=64, depth=3,
                                  num_heads=2, pretrained=False, num_classes=0)
    reference.load_state_dict(checkpoint_filter_fn(exported, reference))  # strict
