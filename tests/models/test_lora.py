import ast
import os
import os.path as osp
from itertools import chain

import pytest
import torch
from torch import nn

import dinolora_mmseg.models.utils
from dinolora_mmseg.models import DINOv2, DINOv3, LoRALinear, add_lora, fold_lora
from dinolora_mmseg.models.lora_norm import LayerNormSharingNormalized, share_normalized_input
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


def sharing(norm):
    """A :class:`LayerNormSharingNormalized` with ``norm``'s parameters."""
    holder = nn.ModuleDict({'norm': norm})
    share_normalized_input(holder, ['norm'])
    assert type(holder['norm']) is LayerNormSharingNormalized
    assert holder['norm'].weight is norm.weight
    return holder['norm']


@pytest.mark.parametrize('norm_trains', [False, True], ids=['frozen-norm', 'trained-norm'])
def test_adapter_after_a_sharing_norm_equals_adapter_of_norm(norm_trains):
    """An adapter reading a :class:`LayerNormSharingNormalized` output (its normalised
    input) gives the outputs and gradients of ``layer(norm(x))`` within 1e-5."""
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

    shared = sharing(norm)
    out, grads = outputs_and_grads(lambda: layer(shared(x)))
    expected, expected_grads = outputs_and_grads(lambda: layer(norm(x)))
    assert (out - expected).abs().max() < 1e-5
    for mine, reference in zip(grads, expected_grads):
        assert reference.abs().max() > 0
        assert (mine - reference).abs().max() < 1e-5
    assert (shared(x) - norm(x)).abs().max() < 1e-5  # a layer norm to any other reader


def test_adapter_after_a_sharing_norm_keeps_one_activation_for_backward():
    """With the norm and the base weight frozen, as in the backbone."""
    layer = LoRALinear(64, 192, {'q': (0, 64), 'v': (128, 192)}, rank=3)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    norm = nn.LayerNorm(64, eps=1e-6).requires_grad_(False)
    x = torch.randn(8, 100, 64, requires_grad=True)
    assert activations_kept(lambda: layer(norm(x)), x) == 2  # the norm's input and output
    shared = sharing(norm)
    assert activations_kept(lambda: layer(shared(x)), x) == 1
    with torch.no_grad():
        assert torch.equal(layer(shared(x)), layer(norm(x)))


def activations_kept(forward, x):
    """How many tensors of ``x``'s size ``forward`` keeps for backward."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(nbytes == x.numel() * x.element_size() for nbytes in storages.values())


@pytest.mark.parametrize('family, arch, targets, norms', [
    (DINOv2, TINY, ('q', 'v', 'fc1', 'fc2'), ('norm1', 'norm2')),
    (DINOv2, dict(TINY, ffn_type='swiglu'), ('fc1', ), ('norm2', )),
    (DINOv3, dict(TINY, ffn_type='swiglu'), ('v', 'fc1'), ('norm1', 'norm2')),
    (DINOv2, TINY, ('proj', 'fc2'), ()),
])
def test_adapters_after_a_norm_keep_one_activation_less(family, arch, targets, norms):
    """The backbone makes the norms before adapted qkv, fc1 (or SwiGLU's w12, w1 and w2)
    share their normalised input: one token-sized tensor less per such norm and block
    kept for backward, the same state-dict keys, the same outputs (1e-5)."""
    torch.manual_seed(0)
    model = family(arch=arch, lora=dict(rank=2, targets=targets)).train()
    randomise_adapters(model)
    shared = [f'blocks.{i}.{norm}' for i in range(3) for norm in norms]
    assert sorted(name for name, m in model.named_modules()
                  if isinstance(m, LayerNormSharingNormalized)) == sorted(shared)
    assert model.state_dict().keys() == family(arch=arch, lora=dict(
        rank=2, targets=targets)).state_dict().keys()
    x = torch.randn(1, 3, 28, 28).requires_grad_()
    tokens = model.blocks[0].norm1.weight.numel() * (4 + model.num_prefix_tokens)
    kept = activations_kept(lambda: model(x), torch.empty(tokens))
    out = model(x)[0]
    for name in shared:  # plain layer norms again
        norm = model.get_submodule(name)
        plain = nn.LayerNorm(norm.normalized_shape, norm.eps)
        plain.weight, plain.bias = norm.weight, norm.bias
        model.set_submodule(name, plain)
    assert activations_kept(lambda: model(x), torch.empty(tokens)) == kept + len(shared)
    assert (model(x)[0] - out).abs().max() < 1e-5


def test_generic_layers_import_nothing_of_lora():
    folder = osp.dirname(dinolora_mmseg.models.utils.__file__)
    for name in os.listdir(folder):
        if name.endswith('.py'):
            with open(osp.join(folder, name)) as f:
                tree = ast.parse(f.read())
            imported = [node.module or '' for node in ast.walk(tree)
                        if isinstance(node, ast.ImportFrom)] + [
                alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
            assert not any('lora' in module for module in imported), name


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


def tensors(model):
    """Copies of every parameter and buffer of ``model``, by name."""
    return {k: v.detach().clone() for k, v in chain(model.named_parameters(),
                                                    model.named_buffers())}


def unchanged(model, before):
    return tensors(model).keys() == before.keys() and all(
        torch.equal(v, before[k]) for k, v in tensors(model).items())


@pytest.mark.parametrize('seed', range(5))
def test_folded_model_computes_what_the_adapted_one_does(seed):
    """Adapters whose updates are ~40 % of the weights they adapt (mean |BA| ~0.006 vs
    |W| ~0.016): the folded copy's outputs (up to ~4, final LayerNorm) agree within 1e-5
    (worst seen over 40 seeds: 7e-7); it is the model without LoRA, and the adapted
    model is left exactly as it was."""
    torch.manual_seed(seed)
    model = DINOv2(arch=dict(TINY, ffn_type='swiglu'),
                   lora=dict(rank=3, alpha=6, targets=('q', 'k', 'v', 'proj', 'fc1', 'fc2'))).eval()
    randomise_adapters(model, seed, std=0.05)
    before = tensors(model)
    x = torch.randn(2, 3, 42, 56)
    folded = fold_lora(model)
    with torch.no_grad():
        adapted_out, folded_out = model(x)[0], folded(x)[0]
        with torch.enable_grad():  # the adapters' own products, not the no-grad fold
            trained_path = model(x)[0]
    assert (folded_out - adapted_out).abs().max() < 1e-5
    assert (folded_out - trained_path).abs().max() < 1e-5
    assert (folded.blocks[0].mlp.w12.weight - model.blocks[0].mlp.w12.weight).abs().max() > 1e-3
    assert not any(isinstance(m, LoRALinear) for m in folded.modules())
    assert type(folded.blocks[0].attn.qkv) is nn.Linear
    assert not any(p.requires_grad for p in folded.parameters())  # nothing left to train
    # the source: same layers, every tensor bit-identical
    assert isinstance(model.blocks[0].attn.qkv, LoRALinear)
    assert unchanged(model, before)
    # the folded state dict is that of the model without LoRA
    plain = DINOv2(arch=dict(TINY, ffn_type='swiglu')).eval()
    plain.load_state_dict(folded.state_dict())
    with torch.no_grad():
        assert torch.equal(plain(x)[0], folded_out)


def test_fold_adds_each_parts_update_to_its_rows():
    """On a fused qkv with q and v adapted: folding adds ``(alpha / r) B_part @ A_part``
    (computed here in float64) to each part's rows within 1e-6; the k rows and the bias
    are bit-identical, and the source layer is unchanged."""
    layer = LoRALinear(64, 192, {'q': (0, 64), 'v': (128, 192)}, rank=3, alpha=6)
    randomise_adapters(nn.ModuleDict({'x': layer}))
    before = tensors(layer)
    folded = fold_lora(layer)
    assert type(folded) is nn.Linear and folded.weight.dtype == torch.float32
    assert torch.equal(folded.weight[64:128], before['weight'][64:128])
    assert torch.equal(folded.bias, before['bias'])
    for name, (start, end) in layer.parts.items():
        expected = 2.0 * layer.lora_B[name].double() @ layer.lora_A[name].double()
        added = folded.weight[start:end].double() - before['weight'][start:end].double()
        assert expected.abs().max() > 0.1  # updates as large as the weights (|W| < 0.125)
        assert (added - expected).abs().max() < 1e-6, name
    assert unchanged(layer, before)


def test_fold_in_place_reuses_the_weights_and_a_copy_shares_the_rest():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3), nn.Linear(3, 3))
    add_lora(model, {'0': {'all': (0, 8)}, '2': {'all': (0, 3)}}, rank=2, alpha=2)
    randomise_adapters(model)
    x = torch.randn(4, 8)
    with torch.no_grad():
        before = model(x)
    copy = fold_lora(model)
    # the copy: new adapted weights, the storage of everything else shared
    assert copy[0].weight.data_ptr() != model[0].weight.data_ptr()
    assert copy[0].bias.data_ptr() == model[0].bias.data_ptr()
    assert copy[3].weight.data_ptr() == model[3].weight.data_ptr()
    assert copy[3].weight is not model[3].weight  # own parameters: own flags and .data
    pointers = [model[0].weight.data_ptr(), model[2].weight.data_ptr()]
    assert fold_lora(model, inplace=True) is model
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear, nn.Linear]
    assert [model[0].weight.data_ptr(), model[2].weight.data_ptr()] == pointers
    assert model.state_dict().keys() == nn.Sequential(
        nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3), nn.Linear(3, 3)).state_dict().keys()
    with torch.no_grad():
        assert (model(x) - before).abs().max() < 1e-6
        assert torch.equal(model(x), copy(x))


def test_fold_into_bfloat16_frozen_weights(tmp_path):
    """float32 adapters folded into bfloat16 frozen weights, in bfloat16: each folded
    weight is the float64 ``W + (alpha / r) B @ A`` within the rounding of the factors
    and of the result (bound below); the folded model computes exactly what the adapted
    one does without autograd (the same fold), and within 5e-3 (relative L2; measured
    2.2e-3, a bfloat16 rounding being up to 2**-9 = 2e-3) of its training path, which
    adds the float32 update to the bfloat16 product."""
    torch.save(official_state_dict(64, 3), tmp_path / 'w.pth')
    model = DINOv2(arch=TINY, pretrained=str(tmp_path / 'w.pth'), frozen_dtype='bfloat16',
                   lora=dict(rank=3, alpha=6, targets=('q', 'v', 'fc1'))).eval()
    randomise_adapters(model, std=0.05)
    before = tensors(model)
    folded = fold_lora(model)
    x = torch.randn(2, 3, 42, 56)
    with torch.no_grad():
        expected = model(x)[0]
        assert torch.equal(folded(x)[0], expected)
        with torch.enable_grad():
            trained_path = model(x)[0]
    assert (folded(x)[0] - trained_path).norm() / trained_path.norm() < 5e-3
    for name, layer in model.named_modules():
        if not isinstance(layer, LoRALinear):
            continue
        weight = folded.get_submodule(name).weight
        assert weight.dtype == torch.bfloat16
        exact = layer.weight.double().clone()
        magnitude = torch.zeros_like(exact)
        for part, (start, end) in layer.parts.items():
            a, b = layer.lora_A[part].double(), layer.lora_B[part].double()
            exact[start:end] += 2.0 * b @ a
            magnitude[start:end] += 2.0 * b.abs() @ a.abs()
        # half an ulp (2**-9 relative) for the result, for A and for B each
        bound = 2.0**-8 * exact.abs() + 2.0**-7 * magnitude
        assert ((weight.double() - exact).abs() <= bound).all(), name
        assert (weight.double() - layer.weight.double()).abs().max() > 0.01
    assert unchanged(model, before)


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
