"""MMSeg's Mask2FormerHead (mmdet's deformable-attention pixel decoder) on our backbones and
ViTFPN, as the configs build it: every Mask2Former config trains and predicts on the CPU,
training on a fixed batch lowers the loss, ``with_cp`` changes no gradient, and under a
bfloat16 autocast the deformable attention gets float32 values (mmcv's CUDA kernels have
no bfloat16)."""
import glob
import math
import os.path as osp

import mmcv.ops.multi_scale_deform_attn as mmcv_deform_attn
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from dinolora_mmseg.models.decode_heads import Float32DeformAttnMask2FormerHead
from tests.helpers import ROOT

CONFIGS = ['dinov2_lora_mask2former_ade20k.py', 'dinov2_lora_mask2former_voc.py',
           'dinov3_lora_mask2former_ade20k.py', 'dinov3_lora_mask2former_voc.py',
           'dinov2_lora_mask2former_prior_ade20k.py', 'dinov3_lora_mask2former_prior_ade20k.py']
DEMO = 'demo/dinov2_lora_mask2former_voc_demo.py'
DEMO_PRIOR = 'demo/dinov2_lora_mask2former_prior_voc_demo.py'


def build(name: str, embed_dims: int, num_layers: int, **backbone):
    """The config's model with a small random backbone (2 heads) in place of its own."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    init_default_scope('mmseg')
    cfg.model.backbone.update(
        arch=dict(embed_dims=embed_dims, num_layers=num_layers, num_heads=2), pretrained=None,
        **backbone)
    cfg.model.neck.in_channels = embed_dims
    torch.manual_seed(0)
    return cfg, MODELS.build(cfg.model)


def batch(size=(56, 56), classes=(0, 3, 8), seed=0):
    """Two normalised images of three class regions each (a class's pixels share a random
    colour) and their label maps, as the data preprocessor hands them to the model."""
    g = torch.Generator().manual_seed(seed)
    H, W = size
    labels = torch.zeros(2, H, W, dtype=torch.long)
    labels[0, :, W // 2:] = classes[1]
    labels[1, H // 3:, :W // 2] = classes[2]
    labels[:, :4] = 255  # ignored border
    colours = torch.randn(max(classes) + 1, 3, generator=g)
    images = colours[labels.clamp(max=max(classes))].permute(0, 3, 1, 2)
    images = images + 0.3 * torch.randn(images.shape, generator=g)
    meta = dict(img_shape=size, pad_shape=size, ori_shape=size)
    samples = [SegDataSample(metainfo=meta, gt_sem_seg=PixelData(data=label[None]))
               for label in labels]
    return images, samples


@pytest.mark.parametrize('name', CONFIGS)
def test_config_trains_and_predicts(name):
    """The full head of each config (100 queries, 9 decoder layers, 6 deformable encoder
    layers) on a 24-block random backbone: finite losses, gradients in the adapters,
    and class scores at the input size, padding cropped off."""
    cfg, model = build(name, embed_dims=128, num_layers=24)
    assert isinstance(model.decode_head, Float32DeformAttnMask2FormerHead)
    patch = cfg.model.neck.get('patch_size', 14)
    images, samples = batch(size=(4 * patch, 6 * patch))
    losses = model.loss(images, samples)
    assert {'decode.loss_cls', 'decode.loss_mask', 'decode.loss_dice',
            'decode.d8.loss_cls'} <= set(losses)
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    lora = [p for n, p in model.backbone.named_parameters() if '.lora_B.' in n]
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    if model.backbone.spatial_prior is not None:  # starts at zero: its projections learn
        projections = list(model.neck.prior_projections.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projections)
    model.eval()
    padded = torch.zeros(2, 3, 5 * patch, 6 * patch)
    padded[:, :, :4 * patch] = images
    meta = dict(img_shape=(4 * patch, 6 * patch), ori_shape=(4 * patch, 6 * patch),
                pad_shape=(5 * patch, 6 * patch), padding_size=[0, 0, 0, patch])
    with torch.no_grad():
        results = model.predict(padded, [SegDataSample(metainfo=meta) for _ in range(2)])
    scores = results[0].seg_logits.data
    assert scores.shape == (model.decode_head.num_classes, 4 * patch, 6 * patch)
    # Mask classification: per class, the sum over queries of class x mask probability.
    num_queries = cfg.model.decode_head.num_queries
    assert 0 <= scores.min() and scores.sum(0).max() <= num_queries


def train_steps(cfg, model, steps: int):
    images, samples = batch()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    losses = []
    for _ in range(steps):
        loss, _ = model.parse_losses(model.loss(images, samples))
        optim_wrapper.update_params(loss)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize('name', [DEMO, DEMO_PRIOR])
def test_training_on_a_fixed_batch_lowers_the_loss(name):
    """The demo config's tiny head and its optimizer (AdamW, gradient clipping); with the
    spatial prior, its stem trains too once its projections have left zero."""
    torch.manual_seed(0)
    cfg, model = build(name, embed_dims=64, num_layers=4, out_indices=(0, 1, 2, 3))
    stem = [p.detach().clone() for p in model.backbone.spatial_prior.parameters()
            ] if name == DEMO_PRIOR else []
    losses = train_steps(cfg, model, 6)
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < 0.8 * losses[0], losses
    if stem:
        assert all(not torch.equal(p, q) for p, q in
                   zip(model.backbone.spatial_prior.parameters(), stem))


def test_activation_checkpointing_gives_the_same_gradients():
    grads = []
    for with_cp in (False, True):
        cfg, model = build(DEMO, embed_dims=64, num_layers=4, out_indices=(0, 1, 2, 3),
                           with_cp=with_cp)
        model.train()
        images, samples = batch()
        torch.manual_seed(1)  # the head samples points at random
        loss, _ = model.parse_losses(model.loss(images, samples))
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    assert any('.lora_' in n for n in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_every_mask2former_config_names_the_float32_attention_head():
    paths = glob.glob(osp.join(ROOT, 'configs', '*mask2former*.py')) + glob.glob(
        osp.join(ROOT, 'configs', 'demo', '*mask2former*.py'))
    assert len(paths) >= 10
    for path in paths:
        assert Config.fromfile(path).model.decode_head.type == (
            'Float32DeformAttnMask2FormerHead'), path


def spied_dtypes(monkeypatch, name: str):
    """The dtypes of the values that mmcv's ``name`` (in its deformable-attention module)
    receives from now on."""
    dtypes = []
    function = getattr(mmcv_deform_attn, name)

    def spy(value, *args):
        dtypes.append(value.dtype)
        return function(value, *args)

    monkeypatch.setattr(mmcv_deform_attn, name, spy)
    return dtypes


def test_deformable_attention_gets_float32_under_bfloat16_autocast(monkeypatch):
    """The CPU path of mmcv (its PyTorch function), in training and inference; the rest of
    the head still autocasts (bfloat16 class scores)."""
    dtypes = spied_dtypes(monkeypatch, 'multi_scale_deformable_attn_pytorch')
    cfg, model = build(DEMO, embed_dims=64, num_layers=4, out_indices=(0, 1, 2, 3))
    images, samples = batch()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss, _ = model.parse_losses(model.loss(images, samples))
        loss.backward()
        model.eval()
        with torch.no_grad():
            cls_scores, _ = model.decode_head(model.extract_feat(images), samples)
    layers = cfg.model.decode_head.pixel_decoder.encoder.num_layers
    assert dtypes == [torch.float32] * 2 * layers
    assert cls_scores[-1].dtype == torch.bfloat16
    assert torch.isfinite(loss)
    # Without autocast the attention is mmcv's, in the weights' dtype.
    with torch.no_grad():
        model.decode_head(model.extract_feat(images), samples)
    assert dtypes[2 * layers:] == [torch.float32] * layers


def test_the_cuda_kernel_path_gets_float32_under_bfloat16_autocast(monkeypatch):
    """mmcv calls its compiled kernel (``ext_module.ms_deform_attn_forward``) for values
    on a GPU; here its MLU condition leads there on the CPU, and a stand-in kernel refuses
    bfloat16 as the CUDA one does."""
    dtypes = []

    class Kernels:
        @staticmethod
        def ms_deform_attn_forward(value, shapes, level_start_index, locations, weights,
                                   im2col_step):
            if value.dtype not in (torch.float32, torch.float64, torch.float16):
                raise RuntimeError(f'"ms_deform_attn_forward_cuda" not implemented for '
                                   f'{value.dtype}')
            dtypes.append((value.dtype, locations.dtype, weights.dtype))
            return mmcv_deform_attn.multi_scale_deformable_attn_pytorch(
                value, shapes, locations, weights)

    monkeypatch.setattr(mmcv_deform_attn, 'IS_MLU_AVAILABLE', True)
    monkeypatch.setattr(torch.Tensor, 'is_mlu', True, raising=False)
    monkeypatch.setattr(mmcv_deform_attn, 'ext_module', Kernels)
    pytorch = spied_dtypes(monkeypatch, 'multi_scale_deformable_attn_pytorch')
    cfg, model = build(DEMO, embed_dims=64, num_layers=4, out_indices=(0, 1, 2, 3))
    images, samples = batch()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        model.eval().decode_head(model.extract_feat(images), samples)
    layers = cfg.model.decode_head.pixel_decoder.encoder.num_layers
    assert dtypes == [(torch.float32, ) * 3] * layers
    assert pytorch == [torch.float32] * layers  # only through the stand-in kernel
