import pytest
import torch
from torch import nn

from dinolora_mmseg.models import (DINOv2, LoRALinear, add_lora, merge_lora, merged_state_dict,
                                   unmerge_lora)
from tests.helpers import TINY, official_state_dict


def randomise_adapters(model, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.lora_' in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def test_fresh_adapters_leave_outputs_unchanged():
    plain = DINOv2(arch=TINY).eval()
    adapted = DINOv2(arch=TINY, lora=dict(rank=4, targets=('qkv', 'proj', 'fc1', 'fc2')))
    adapted.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 3, 56, 70)
    assert torch.equal(plain(x)[0], adapted.eval()(x)[0])


def test_only_adapters_train():
    model = DINOv2(arch=TINY, lora=dict(rank=2, targets=('q', 'v', 'fc2')))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f'blocks.{i}.{m}.lora_{ab}.{t}' for i in range(3) for ab in 'AB'
                         for m, t in [('attn.qkv', 'q'), ('attn.qkv', 'v'), ('mlp.fc2', 'fc2')]}
    model.train()
    model(torch.randn(1, 3, 28, 28))[0].sum().backward()
    assert all((p.grad is None) != p.requires_grad for p in model.parameters())


@pytest.mark.parametrize('target, rows', [('q', (0, 64)), ('k', (64, 128)), ('v', (128, 192))])
def test_qkv_targets_change_only_their_rows(target, rows):
    model = DINOv2(arch=TINY, lora=dict(rank=2, targets=(target, )))
    randomise_adapters(model)
    layer = model.blocks[1].attn.qkv
    assert isinstance(layer, LoRALinear) and list(layer.parts) == [target]
    x = torch.randn(5, 64)
    delta = layer(x) - nn.functional.linear(x, layer.weight, layer.bias)
    inside = torch.zeros(192, dtype=torch.bool)
    inside[rows[0]:rows[1]] = True
    assert delta[:, inside].abs().min() > 0
    assert torch.equal(delta[:, ~inside], torch.zeros_like(delta[:, ~inside]))


@pytest.mark.parametrize('grad', [True, False], ids=['training-path', 'inference-path'])
def test_update_is_alpha_over_rank_times_b_a(grad):
    """Both forward paths (the update added to the output while autograd records,
    folded into the weight under ``no_grad``) compute the LoRA formula, on 3-D inputs
    and with two parts writing to rows of their own."""
    layer = LoRALinear(6, 7, {'p': (0, 3), 'r': (4, 7)}, rank=2, alpha=8)
    randomise_adapters(nn.ModuleDict({'x': layer}))
    x = torch.randn(2, 3, 6)
    update = torch.zeros(2, 3, 7)
    for name, (start, end) in layer.parts.items():
        update[..., start:end] = (x @ layer.lora_A[name].T) @ layer.lora_B[name].T
    expected = x @ layer.weight.T + layer.bias + 4.0 * update
    with torch.set_grad_enabled(grad):
        out = layer(x)
    assert out.shape == (2, 3, 7)
    assert (out - expected).abs().max() < 1e-6


def test_training_path_gradients_match_the_formula():
    layer = LoRALinear(6, 7, {'p': (0, 3), 'r': (4, 7)}, rank=2, alpha=8)
    randomise_adapters(nn.ModuleDict({'x': layer}))
    x = torch.randn(2, 3, 6, requires_grad=True)
    weights = torch.randn(2, 3, 7)
    trainable = [x, *layer.lora_A.values(), *layer.lora_B.values()]

    (layer(x) * weights).sum().backward()
    ours = [t.grad.clone() for t in trainable]
    for t in trainable:
        t.grad = None
    update = sum(nn.functional.pad((x @ layer.lora_A[name].T) @ layer.lora_B[name].T,
                                   (start, 7 - end))
                 for name, (start, end) in layer.parts.items())
    ((x @ layer.weight.T + layer.bias + 4.0 * update) * weights).sum().backward()
    for mine, reference in zip(ours, (t.grad for t in trainable)):
        assert reference.abs().max() > 0
        assert (mine - reference).abs().max() < 1e-5


@pytest.mark.parametrize('norm_trains', [False, True], ids=['frozen-norm', 'trained-norm'])
def test_linear_after_norm_equals_linear_of_norm(norm_trains):
    """``forward_after_norm`` (the adapter reading the normalised input) gives the
    outputs and gradients of ``layer(norm(x))``."""
    layer = LoRALinear(6, 7, {'p': (0, 3), 'r': (4, 7)}, rank=2, alpha=8)
    norm = nn.LayerNorm(6, eps=1e-6)
    randomise_adapters(nn.ModuleDict({'x': layer}))
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.5)
        norm.bias.normal_(0.0, 0.5)
    norm.requires_grad_(norm_trains)
    x = (torch.randn(2, 3, 6) * 3 + 1).requires_grad_()
    weights = torch.randn(2, 3, 7)
    trainable = [x, *layer.lora_A.values(), *layer.lora_B.values()] + (
        [norm.weight, norm.bias] if norm_trains else [])

    def outputs_and_grads(forward):
        out = forward()
        (out * weights).sum().backward()
        grads = [t.grad.clone() for t in trainable]
        for t in trainable:
            t.grad = None
        return out.detach(), grads

    out, grads = outputs_and_grads(lambda: layer.forward_after_norm(x, norm))
    expected, expected_grads = outputs_and_grads(lambda: layer(norm(x)))
    assert (out - expected).abs().max() < 1e-5
    for mine, reference in zip(grads, expected_grads):
        assert reference.abs().max() > 0
        assert (mine - reference).abs().max() < 1e-5


def test_linear_after_norm_keeps_one_activation_for_backward():
    """With the norm and the base weight frozen, as in the backbone."""
    layer = LoRALinear(64, 192, {'q': (0, 64), 'v': (128, 192)}, rank=3)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    norm = nn.LayerNorm(64, eps=1e-6).requires_grad_(False)
    x = torch.randn(8, 100, 64, requires_grad=True)

    def activations_kept(forward):
        storages = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            forward()
        return sum(nbytes == x.numel() * 4 for nbytes in storages.values())

    assert activations_kept(lambda: layer(norm(x))) == 2  # the norm's input and output
    assert activations_kept(lambda: layer.forward_after_norm(x, norm)) == 1
    with torch.no_grad():
        assert torch.equal(layer.forward_after_norm(x, norm), layer(norm(x)))


def test_blocks_pass_their_norms_to_adapted_projections(monkeypatch):
    """Adapters right after a norm (qkv, fc1) take the one-activation path; fc2 does not."""
    model = DINOv2(arch=TINY, lora=dict(rank=2, targets=('q', 'v', 'fc1', 'fc2'))).train()
    calls = []
    original = LoRALinear.forward_after_norm
    monkeypatch.setattr(LoRALinear, 'forward_after_norm',
                        lambda self, x, norm: calls.append((self, norm)) or original(self, x, norm))
    model(torch.randn(1, 3, 28, 28))
    assert calls == [pair for block in model.blocks for pair in
                     ((block.attn.qkv, block.norm1), (block.mlp.fc1, block.norm2))]


def test_adapter_dropout_still_drops_without_autograd():
    """The folded inference path is taken only when dropout is inactive."""
    layer = LoRALinear(64, 64, {'all': (0, 64)}, rank=4, dropout=0.5)
    randomise_adapters(nn.ModuleDict({'x': layer}))
    x = torch.randn(8, 64)
    with torch.no_grad():
        layer.eval()
        assert torch.equal(layer(x), layer(x))
        layer.train()
        assert not torch.allclose(layer(x), layer(x))


@pytest.mark.parametrize('seed', range(5))
def test_merge_and_unmerge(seed):
    """Adapters whose updates are ~40 % of the weights they adapt (mean |BA| ~0.006 vs
    |W| ~0.016): merged outputs (up to ~4, final LayerNorm) agree within 1e-5 (worst
    seen over 40 seeds: 7e-7)."""
    torch.manual_seed(seed)
    model = DINOv2(arch=dict(TINY, ffn_type='swiglu'),
                   lora=dict(rank=3, alpha=6, targets=('q', 'k', 'v', 'proj', 'fc1', 'fc2'))).eval()
    randomise_adapters(model, seed, std=0.05)
    x = torch.randn(2, 3, 42, 56)
    weights = {n: p.clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        unmerged = model(x)[0]
        model.merge_lora()
        merged = model(x)[0]
        assert not torch.equal(model.blocks[0].attn.qkv.weight, weights['blocks.0.attn.qkv.weight'])
        model.unmerge_lora()
        again = model(x)[0]
    assert (merged - unmerged).abs().max() < 1e-5
    assert (again - unmerged).abs().max() < 1e-5
    for n, p in model.named_parameters():
        assert torch.allclose(p, weights[n], atol=1e-6), n


def test_merge_adds_each_parts_update_to_its_rows_and_unmerge_takes_it_out():
    """On a fused qkv with q and v adapted: merge adds ``(alpha / r) B_part @ A_part``
    (computed here in float64) to each part's rows, the k rows stay bit-identical
    through merge and unmerge, and unmerge restores the weight up to float32 rounding."""
    layer = LoRALinear(64, 192, {'q': (0, 64), 'v': (128, 192)}, rank=3, alpha=6)
    randomise_adapters(nn.ModuleDict({'x': layer}))
    original = layer.weight.detach().clone()
    layer.merge()
    assert layer.merged and torch.equal(layer.weight[64:128], original[64:128])
    for name, (start, end) in layer.parts.items():
        expected = 2.0 * layer.lora_B[name].double() @ layer.lora_A[name].double()
        added = layer.weight[start:end].double() - original[start:end].double()
        assert expected.abs().max() > 0.1  # updates as large as the weights (|W| < 0.125)
        assert (added - expected).abs().max() < 1e-6, name
    assert torch.equal(layer.merged_weight(), layer.weight)
    assert torch.equal(layer.unmerged_weight()[64:128], original[64:128])
    assert (layer.unmerged_weight() - original).abs().max() < 1e-7
    layer.unmerge()
    assert not layer.merged and torch.equal(layer.weight[64:128], original[64:128])
    assert (layer.weight - original).abs().max() < 1e-7


def test_merge_and_unmerge_bfloat16_frozen_weights(tmp_path):
    """float32 adapters folded into bfloat16 frozen weights: the merged model computes
    what the unmerged one does, and unmerge gives back each weight up to the rounding
    of one bfloat16 addition and one subtraction (half an ulp, at most 2**-8 of the
    rounded result, each)."""
    torch.save(official_state_dict(64, 3), tmp_path / 'w.pth')
    model = DINOv2(arch=TINY, pretrained=str(tmp_path / 'w.pth'), frozen_dtype='bfloat16',
                   lora=dict(rank=3, alpha=6, targets=('q', 'v', 'fc1'))).eval()
    randomise_adapters(model, std=0.05)
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    originals = [layer.weight.detach().clone() for layer in layers]
    assert {w.dtype for w in originals} == {torch.bfloat16}
    x = torch.randn(2, 3, 42, 56)
    with torch.no_grad():
        unmerged = model(x)[0]
        model.merge_lora()
        merged_weights = [layer.weight.detach().clone() for layer in layers]
        merged = model(x)[0]
        model.unmerge_lora()
        again = model(x)[0]
    # The unmerged inference path folds into a copy exactly as merge folds in place.
    assert torch.equal(merged, unmerged)
    for layer, original, folded in zip(layers, originals, merged_weights):
        assert not torch.equal(folded, original)
        restored = layer.weight.float()
        bound = 2.0**-8 * (folded.float().abs() + restored.abs())
        assert ((restored - original.float()).abs() <= bound).all()
    # Weights off by at most one bfloat16 rounding, as storing them in bfloat16 already
    # is: the outputs move far less than bfloat16 weights against float32 ones do
    # (measured 0.05 % here, 0 for most seeds, against 0.5 %).
    assert (again - unmerged).norm() / unmerged.norm() < 2e-3


def merged_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = DINOv2(arch=TINY, lora=dict(rank=3, alpha=6, targets=('q', 'v', 'fc1')),
                   **kwargs).eval()
    randomise_adapters(model, seed, std=0.05)
    return model


def test_a_state_dict_of_a_merged_model_applies_the_update_once():
    model = merged_model()
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        expected = model(x)[0]
        model.merge_lora()
        saved = model.state_dict()
        fresh = DINOv2(arch=TINY, lora=dict(rank=3, alpha=6, targets=('q', 'v', 'fc1'))).eval()
        fresh.load_state_dict(saved)
        assert (fresh(x)[0] - expected).abs().max() < 1e-5
        # loaded into a merged model, the model stays merged with the loaded adapters
        other = merged_model(seed=1)
        other.merge_lora()
        other.load_state_dict(saved)
        assert all(layer.merged for layer in other.modules() if isinstance(layer, LoRALinear))
        assert (other(x)[0] - expected).abs().max() < 1e-5
        other.unmerge_lora()
        assert (other(x)[0] - expected).abs().max() < 1e-5


def test_merged_state_dict_is_the_model_without_lora():
    model = merged_model()
    x = torch.randn(1, 3, 28, 42)
    plain = DINOv2(arch=TINY).eval()
    for merged_first in (False, True):
        if merged_first:
            model.merge_lora()
        plain.load_state_dict(merged_state_dict(model))
        with torch.no_grad():
            assert (plain(x)[0] - model(x)[0]).abs().max() < 1e-5


def test_training_a_merged_model_is_refused():
    model = merged_model()
    model.merge_lora()
    model.train()
    with pytest.raises(RuntimeError, match='is merged .* Call unmerge_lora'):
        model(torch.randn(1, 3, 28, 28))
    with torch.no_grad():
        model(torch.randn(1, 3, 28, 28))
    model.unmerge_lora()
    model(torch.randn(1, 3, 28, 28))[0].sum().backward()


def test_block_range():
    model = DINOv2(arch=TINY, lora=dict(rank=2, targets=('v', ), layers=[-1]))
    assert [isinstance(b.attn.qkv, LoRALinear) for b in model.blocks] == [False, False, True]


def test_vit_large_rank3_qv_parameter_count():
    with torch.device('meta'):
        model = DINOv2(arch='large', lora=dict(rank=3, alpha=3, targets=('q', 'v')))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 294_912


@pytest.mark.parametrize('lora, message', [
    (dict(rank=0), 'rank must be a positive integer'),
    (dict(rank=-2), 'rank must be a positive integer'),
    (dict(rank=2, targets=('q', 'gate')), "Unknown LoRA target\\(s\\) \\['gate'\\]"),
    (dict(rank=2, targets=()), 'Unknown LoRA target'),
    (dict(rank=2, dropout=1.0), 'dropout must be in'),
    (dict(rank=2, layers=[7]), 'lora layers entry 7 is outside'),
])
def test_bad_lora_settings(lora, message):
    with pytest.raises(ValueError, match=message):
        DINOv2(arch=TINY, lora=lora)


def test_add_lora_to_a_missing_module():
    with pytest.raises(ValueError, match="'head.fc' is not a plain nn.Linear"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), {'head.fc': {'all': (0, 2)}}, rank=1)


def test_merge_helpers_on_any_module():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    add_lora(model, {'0': {'all': (0, 8)}, '2': {'all': (0, 3)}}, rank=2, alpha=2)
    randomise_adapters(model)
    x = torch.randn(4, 8)
    with torch.no_grad():
        before = model(x)
        merge_lora(model)
        assert torch.allclose(model(x), before, atol=1e-6)
        unmerge_lora(model)
        assert torch.allclose(model(x), before, atol=1e-6)
