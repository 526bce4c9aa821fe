"""The spatial prior: a trainable convolutional stem beside a frozen DINO ViT, fused by ViTFPN.

It must leave the ViT's outputs as they are, train and follow train/eval mode while the
ViT is frozen, be saved in (and restored from) checkpoints that leave the frozen weights
out, stay out of the official layout, and start as the plain pyramid in ViTFPN.
"""
import pytest
import torch

from dinolora_mmseg.models import DINOv2, DINOv3, ViTFPN
from dinolora_mmseg.models.utils import SpatialPrior
from tests.helpers import TINY, official_dinov3_state_dict, official_state_dict

PRIOR = dict(channels=8)
WIDTHS = (8, 16, 32, 32)


def tiny(family=DINOv2, pretrained=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    return family(arch=TINY, out_indices=(1, 2), pretrained=pretrained,
                  lora=dict(rank=2, targets=('q', 'v')), **kwargs)


@pytest.fixture(params=[DINOv2, DINOv3], ids=['dinov2', 'dinov3'])
def weights(request, tmp_path):
    """(backbone class, an official-layout file of a 3-block, 64-wide model)."""
    family = request.param
    state = (official_state_dict(64, 3) if family is DINOv2
             else official_dinov3_state_dict(64, 3, 2))
    path = tmp_path / 'official.pth'
    torch.save(state, path)
    return family, str(path)


@pytest.mark.parametrize('size', [(56, 56), (42, 70), (61, 33)])
def test_maps_cover_the_image_at_strides_4_to_32(size):
    H, W = size
    maps = SpatialPrior(channels=8)(torch.randn(2, 3, H, W))
    assert [tuple(m.shape) for m in maps] == [
        (2, c, -(-H // s), -(-W // s)) for c, s in zip(WIDTHS, SpatialPrior.strides)]


def test_bad_width_is_refused():
    with pytest.raises(ValueError, match='channels must be a positive int, got 0'):
        SpatialPrior(channels=0)


def test_prior_maps_follow_the_unchanged_vit_outputs(weights):
    family, path = weights
    plain = tiny(family, path).eval()
    with_prior = tiny(family, path, spatial_prior=PRIOR).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        expected, outputs = plain(x), with_prior(x)
    assert len(outputs) == len(expected) + 4
    for out, ref in zip(outputs, expected):
        assert torch.equal(out, ref)
    H, W = (-(-s // with_prior.patch_size) * with_prior.patch_size for s in x.shape[-2:])
    assert [tuple(m.shape[1:]) for m in outputs[2:]] == [
        (c, -(-H // s), -(-W // s)) for c, s in zip(WIDTHS, SpatialPrior.strides)]


def test_prior_trains_and_follows_the_mode_while_the_vit_is_frozen(weights):
    family, path = weights
    model = tiny(family, path, spatial_prior=PRIOR)
    prior = dict(model.spatial_prior.named_parameters())
    assert prior and all(p.requires_grad and p.device.type == 'cpu' for p in prior.values())
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if not n.startswith('spatial_prior.') and '.lora_' not in n)
    model.train()
    assert model.spatial_prior.training and not model.blocks[0].training
    assert all(m.training for m in model.spatial_prior.modules())
    batch_norm = model.spatial_prior.stem[0].bn
    before = batch_norm.running_mean.clone()
    sum(m.sum() for m in model(torch.randn(2, 3, 56, 56))[2:]).backward()
    assert not torch.equal(batch_norm.running_mean, before)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.values())
    model.eval()
    assert not any(m.training for m in model.spatial_prior.modules())


def test_checkpoints_keep_the_prior_and_leave_the_frozen_weights_out(weights):
    family, path = weights
    model = tiny(family, path, spatial_prior=PRIOR)
    model.train()
    model(torch.randn(2, 3, 56, 56))  # batch statistics into the running buffers
    model.eval()
    state = model.state_dict()
    prior_keys = {k for k in state if k.startswith('spatial_prior.')}
    assert {'spatial_prior.stem.0.conv.weight', 'spatial_prior.stem.0.bn.running_mean',
            'spatial_prior.downsamples.2.bn.num_batches_tracked'} <= prior_keys
    assert set(state) - prior_keys - {'_extra_state'} == {
        k for k in state if '.lora_' in k}
    fresh = tiny(family, path, seed=1, spatial_prior=PRIOR).eval()
    fresh.load_state_dict(state)
    x = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        for ours, theirs in zip(fresh(x), model(x)):
            assert torch.equal(ours, theirs)
    without_prior = {k: v for k, v in state.items() if k not in prior_keys}
    with pytest.raises(RuntimeError, match='Missing key.*spatial_prior.stem.0.conv.weight'):
        fresh.load_state_dict(without_prior)


def test_official_layout_leaves_the_prior_out(weights):
    family, path = weights
    model = tiny(family, path, spatial_prior=PRIOR)
    official = model.official_state_dict()
    assert not any('spatial_prior' in k for k in official)
    assert official.keys() == torch.load(path, weights_only=True).keys()


def test_bfloat16_frozen_weights_leave_the_prior_in_float32(weights):
    family, path = weights
    model = tiny(family, path, frozen_dtype='bfloat16', spatial_prior=PRIOR).eval()
    assert all(p.dtype == torch.float32 for p in model.spatial_prior.parameters())
    assert model.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 56, 56))
    assert all(out.dtype == torch.float32 for out in outputs)


def test_unfrozen_backbone_trains_everything():
    model = tiny(frozen=False, spatial_prior=PRIOR).train()
    assert model.blocks[0].training and model.spatial_prior.training
    assert all(p.requires_grad for p in model.parameters())


def neck_pair():
    """ViTFPN with and without prior inputs, sharing every other weight."""
    plain = ViTFPN(in_channels=64, out_channels=16, num_inputs=4,
                   norm_cfg=dict(type='GN', num_groups=4))
    fused = ViTFPN(in_channels=64, out_channels=16, num_inputs=4, prior_channels=WIDTHS,
                   norm_cfg=dict(type='GN', num_groups=4))
    missing, unexpected = fused.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith('prior_projections.') for k in missing)
    return plain.eval(), fused.eval()


def features_of(backbone, x):
    with torch.no_grad():
        return backbone(x)


def test_fpn_starts_as_the_plain_pyramid_and_then_uses_the_prior():
    torch.manual_seed(0)
    backbone = DINOv2(arch=TINY, out_indices=(0, 1, 2, 2), spatial_prior=PRIOR).eval()
    features = features_of(backbone, torch.randn(2, 3, 56, 70))
    plain, fused = neck_pair()
    with torch.no_grad():
        expected = plain(features[:4])
        outputs = fused(features)
        for out, ref in zip(outputs, expected):
            assert torch.equal(out, ref)
        for projection in fused.prior_projections:
            projection.weight.normal_()
        changed = fused(features)
    assert [o.shape for o in changed] == [o.shape for o in expected]
    assert all((o - r).abs().max() > 1e-3 for o, r in zip(changed, expected))


def test_prior_gets_gradients_once_the_projections_leave_zero():
    torch.manual_seed(0)
    backbone = DINOv2(arch=TINY, out_indices=(0, 1, 2, 2), spatial_prior=PRIOR).train()
    _, neck = neck_pair()
    optimizer = torch.optim.SGD([*backbone.spatial_prior.parameters(), *neck.parameters()],
                                lr=0.1)
    x = torch.randn(2, 3, 56, 56)
    grads = []
    for _ in range(2):
        optimizer.zero_grad()
        sum(level.square().mean() for level in neck(backbone(x))).backward()
        stem = backbone.spatial_prior.stem[0].conv.weight.grad
        grads.append(0.0 if stem is None else stem.abs().sum().item())
        optimizer.step()
    assert grads[0] == 0 and grads[1] > 0, grads


@pytest.mark.parametrize('kwargs, inputs_given, message', [
    (dict(prior_channels=WIDTHS), 4, r'expects 4 ViT output\(s\) and 4 spatial-prior maps'),
    (dict(), 8, r'expects 4 ViT output\(s\): 4 inputs, got 8'),
    (dict(prior_channels=(8, 16, 32, 64)), 8, r'prior_channels\[3\] is 64, but spatial-prior '
     'map 3 has 32 channels'),
])
def test_fpn_names_what_does_not_fit(kwargs, inputs_given, message):
    torch.manual_seed(0)
    backbone = DINOv2(arch=TINY, out_indices=(0, 1, 2, 2), spatial_prior=PRIOR).eval()
    features = features_of(backbone, torch.randn(1, 3, 56, 56))[:inputs_given]
    neck = ViTFPN(in_channels=64, out_channels=16, num_inputs=4,
                  norm_cfg=dict(type='GN', num_groups=4), **kwargs)
    with pytest.raises(ValueError, match=message):
        neck(features)


def test_fpn_needs_one_prior_width_per_level():
    with pytest.raises(ValueError, match=r'one width per level \(4\), got \[8, 16\]'):
        ViTFPN(in_channels=64, prior_channels=(8, 16))
