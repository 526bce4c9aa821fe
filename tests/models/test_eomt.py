"""EoMT (queries in the ViT's last blocks, annealed masked attention) on tiny DINO ViTs
as the demo config builds it: shapes, the annealing schedule and hook, train mode with
the masks annealed away equal to eval mode, masks that change attention, what gets
gradients and what a checkpoint holds, and a loss that falls on a fixed batch."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from dinolora_mmseg.engine.hooks import EoMTMaskAnnealingHook
from dinolora_mmseg.models.segmentors import mask_probability
from tests.helpers import ROOT, official_state_dict
from tests.models.test_mask2former import batch

DEMO = 'demo/dinov2_lora_eomt_voc_demo.py'
DIMS, LAYERS = 32, 4


def build(num_blocks=2, family='DINOv2', pretrained=None, **model):
    """The demo config's model on a 4-block, 32-wide random ViT with 4 queries."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', DEMO))
    init_default_scope('mmseg')
    backbone = cfg.model.backbone
    backbone.update(arch=dict(embed_dims=DIMS, num_layers=LAYERS, num_heads=2),
                    pretrained=pretrained)
    if family == 'DINOv3':
        cfg.model.backbone = dict(type='DINOv3', arch=backbone.arch, out_indices=-1,
                                  pretrained=pretrained, lora=backbone.lora)
    cfg.model.mask_annealing = model.pop('mask_annealing', None)
    cfg.model.update(num_blocks=num_blocks, **model)
    cfg.model.decode_head.update(embed_dims=DIMS, num_queries=4,
                                 train_cfg=dict(num_points=64))
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


ANNEAL = dict(start_iters=[10, 20], end_iters=[20, 40], power=0.9)


@pytest.mark.parametrize('family', ['DINOv2', 'DINOv3'])
def test_train_and_predict_shapes(family):
    model = build(family=family, mask_annealing=ANNEAL)
    patch = 14 if family == 'DINOv2' else 16
    images, samples = batch(size=(4 * patch, 3 * patch))
    model.train()
    classes, masks = model.extract_feat(images)
    assert len(classes) == len(masks) == 3  # before each of 2 query blocks, and at the end
    assert classes[-1].shape == (2, 4, 22)
    assert masks[-1].shape == (2, 4, 16, 12)  # two 2x upscalings of the 4 x 3 grid
    losses = model.loss(images, samples)
    assert {'decode.loss_cls', 'decode.loss_dice', 'decode.d1.loss_mask'} <= set(losses)
    model.eval()
    with torch.no_grad():
        classes, masks = model.extract_feat(images)
        results = model.predict(images, samples)
    assert len(classes) == 1  # inference: one ViT forward, one prediction
    assert results[0].seg_logits.data.shape == (21, 4 * patch, 3 * patch)


def test_mask_probability_schedule():
    assert [mask_probability(i, 10, 20) for i in (0, 9, 10)] == [1.0, 1.0, 1.0]
    assert mask_probability(15, 10, 20, 0.9) == pytest.approx(0.5**0.9)
    assert [mask_probability(i, 10, 20) for i in (20, 21, 1000)] == [0.0] * 3
    model = build(mask_annealing=ANNEAL)
    for iteration, probs in ((0, [1, 1]), (15, [0.5**0.9, 1]), (20, [0, 1]),
                             (30, [0, 0.5**0.9]), (40, [0, 0])):
        model.set_iteration(iteration)
        assert model.mask_probs == pytest.approx(probs)


def test_annealing_hook_sets_the_iteration():
    model = build(mask_annealing=ANNEAL)

    class Runner:
        iter = 15

    runner = Runner()
    runner.model = model
    EoMTMaskAnnealingHook().before_train(runner)
    EoMTMaskAnnealingHook().before_train_iter(runner, 0)
    assert model.iteration == 15 and model.mask_probs[0] == pytest.approx(0.5**0.9)
    runner.model = torch.nn.Linear(1, 1)
    with pytest.raises(TypeError, match='EoMT segmentor'):
        EoMTMaskAnnealingHook().before_train(runner)


@pytest.mark.parametrize('family', ['DINOv2', 'DINOv3'])
def test_annealed_training_forward_is_the_eval_forward(family):
    model = build(family=family, mask_annealing=ANNEAL)
    model.set_iteration(40)  # every probability 0; the demo has no dropout, no drop path
    images, _ = batch(size=(56, 56) if family == 'DINOv2' else (64, 64))
    model.train()
    classes, masks = model.extract_feat(images)
    model.eval()
    eval_classes, eval_masks = model.extract_feat(images)
    assert torch.equal(classes[-1], eval_classes[-1]) and torch.equal(masks[-1], eval_masks[-1])


def test_masks_change_attention():
    model = build(mask_annealing=ANNEAL)
    images, _ = batch()
    model.train()
    model.set_iteration(0)  # probability 1 in both query blocks
    masked = model.extract_feat(images)[0][-1]
    model.set_iteration(40)
    plain = model.extract_feat(images)[0][-1]
    assert not torch.allclose(masked, plain)
    mask = model._attention_mask(torch.randn(2, 4, 8, 8), 1.0, 4 + 5 + 16, 4, 4)
    assert mask.shape == (2, 1, 25, 25) and mask[:, :, 4:].all() and mask[:, :, :, :9].all()
    assert not mask[:, :, :4, 9:].all()


def test_gradients_and_checkpoint_hold_only_what_trains(tmp_path):
    torch.save(official_state_dict(DIMS, LAYERS, num_register_tokens=4), tmp_path / 'w.pth')
    model = build(pretrained=str(tmp_path / 'w.pth'), mask_annealing=ANNEAL)
    images, samples = batch()
    model.train()
    loss, _ = model.parse_losses(model.loss(images, samples))
    loss.backward()
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert all('.lora_' in n for n in trainable if n.startswith('backbone.'))
    assert named['decode_head.query_embed.weight'].grad.abs().sum() > 0
    lora_b = [p for n, p in named.items() if '.lora_B.' in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    assert all(p.grad is None for n, p in named.items() if n not in trainable)
    assert set(model.state_dict()) == trainable


def test_config_errors():
    with pytest.raises(ValueError, match='num_blocks must be an int in 1..4'):
        build(num_blocks=5)
    with pytest.raises(ValueError, match='start_iters and end_iters of num_blocks=2'):
        build(mask_annealing=dict(start_iters=[0], end_iters=[1]))
    with pytest.raises(ValueError, match='no neck'):
        build(neck=dict(type='ViTFPN'))


def test_loss_falls_on_a_fixed_batch():
    model = build(mask_annealing=ANNEAL)
    model.set_iteration(0)
    model.train()
    images, samples = batch()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='AdamW', lr=3e-3)))
    losses = []
    for _ in range(20):
        loss, _ = model.parse_losses(model.loss(images, samples))
        optim.update_params(loss)
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.6 * losses[0]
