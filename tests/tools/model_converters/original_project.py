"""The original DINOv2-LoRA project's files and forward pass, written out from its code, for
the tests of tools/model_converters/dinov2_finetune2mmseg.py."""
import contextlib
import sys

import cv2
import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.models import eva, vision_transformer
from torch import nn

from tests.helpers import load_tool

TOOL = 'tools/model_converters/dinov2_finetune2mmseg.py'
IMPORTER = load_tool('model_converters/dinov2_finetune2mmseg')


@contextlib.contextmanager
def storages_tagged_cuda():
    """Make ``torch.save`` record CPU tensors as living on ``cuda:0``, as the original
    files do (they were saved from a GPU); loading them then needs ``map_location``."""
    entry = (0, lambda storage: 'cuda:0' if storage.device.type == 'cpu' else None,
             lambda obj, location: None)
    torch.serialization._package_registry.insert(0, entry)
    try:
        yield
    finally:
        torch.serialization._package_registry.remove(entry)


def original_file(path, dim=384, depth=12, rank=3, classes=21, seed=0, extra=None):
    """Write a file of the original project's format (random tensors) at ``path``: LoRA
    factors of ``rank`` for ``depth`` blocks (none when ``rank`` is None) and the 1x1-conv
    classifier; returns its tensors."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(2 * depth if rank else 0):
        state[f'w_a_{i:03d}'] = nn.Parameter(torch.randn(rank, dim, generator=g) * 0.1)
        state[f'w_b_{i:03d}'] = nn.Parameter(torch.randn(dim, rank, generator=g) * 0.1)
    state['classifier.weight'] = nn.Parameter(torch.randn(classes, dim, 1, 1, generator=g))
    state['classifier.bias'] = nn.Parameter(torch.randn(classes, generator=g))
    state.update(extra or {})
    with storages_tagged_cuda():
        torch.save(state, path)
    return {k: v.detach() for k, v in state.items()}


class OriginalLoRAQKV(nn.Module):
    """The qkv projection as the original project's LoRA wraps it: the frozen output plus
    B(A(x)) added to its query and value thirds."""

    def __init__(self, qkv, a_q, b_q, a_v, b_v):
        super().__init__()
        self.qkv, self.a_q, self.b_q, self.a_v, self.b_v = qkv, a_q, b_q, a_v, b_v

    def forward(self, x):
        qkv = self.qkv(x)
        dim = x.shape[-1]
        qkv[..., :dim] += F.linear(F.linear(x, self.a_q), self.b_q)
        qkv[..., -dim:] += F.linear(F.linear(x, self.a_v), self.b_v)
        return qkv


def original_backbone(backbone_state, family):
    """The original's ViT-S of ``family`` as timm builds it, loaded from an official-layout
    state through timm's own filter of official files (the original loads that layout
    through torch.hub): DINOv2 with 4 registers at 490 px, or DINOv3.

    DINOv3's qkv keeps the key third of its bias at zero (the official ``bias_mask``); timm
    applies the bias after calling ``qkv`` here, so that a module wrapping ``qkv`` takes part
    as the original's LoRA does. timm computes its own RoPE periods; the official model
    uses the file's (rounded to bfloat16), copied in.
    """
    if family == 'dinov2':
        model = timm.create_model('vit_small_patch14_reg4_dinov2', pretrained=False,
                                  num_classes=0, img_size=490)
        model.load_state_dict(vision_transformer.checkpoint_filter_fn(backbone_state, model))
        return model
    model = timm.create_model('vit_small_patch16_dinov3_qkvb', pretrained=False, num_classes=0)
    model.load_state_dict(eva.checkpoint_filter_fn(dict(backbone_state), model))
    model.rope.periods.copy_(backbone_state['rope_embed.periods'].float())
    for block in model.blocks:
        block.attn.qkv_bias_separate = True
    return model


def original_logits(image_file, backbone_state, seed_state, family='dinov2'):
    """The original model on an image file, written out from its code: OpenCV read, RGB,
    cv2 bilinear resize to its input side (490 for DINOv2, 490 lowered to a multiple of 16
    = 480 for DINOv3), / 255; the ViT with the q/v LoRA, final-normed patch tokens
    (``x_norm_patchtokens``), 1x1 convolution, bilinear upsampling to the input side.
    Those logits are then resized bilinearly to the image's size, where MMSeg predicts.

    Returns:
        torch.Tensor: (classes, H, W) logits at the image's size.
    """
    side = 490 if family == 'dinov2' else 480
    image = cv2.cvtColor(cv2.imread(str(image_file)), cv2.COLOR_BGR2RGB)
    resized = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(np.moveaxis(resized, -1, 0) / 255).float()[None]
    model = original_backbone(backbone_state, family)
    if 'w_a_000' in seed_state:
        for i, block in enumerate(model.blocks):
            block.attn.qkv = OriginalLoRAQKV(
                block.attn.qkv, *(seed_state[f'w_{ab}_{2 * i + part:03d}']
                                  for part in (0, 1) for ab in 'ab'))
    grid = side // model.patch_embed.patch_size[0]
    with torch.no_grad():
        tokens = model.eval().forward_features(x)[:, model.num_prefix_tokens:]
        patches = tokens.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        logits = F.conv2d(patches, seed_state['classifier.weight'], seed_state['classifier.bias'])
        logits = F.interpolate(logits, size=(side, side), mode='bilinear', align_corners=False)
        return F.interpolate(logits, size=image.shape[:2], mode='bilinear',
                             align_corners=False)[0]


def import_weights(monkeypatch, capsys, *args):
    """Run the importer with ``ARGS`` in this process; return what it printed."""
    monkeypatch.setattr(sys, 'argv', ['dinov2_finetune2mmseg.py', *map(str, args)])
    IMPORTER.main()
    return capsys.readouterr().out


def decided(logits, margin=1e-3):
    """Pixels whose best class leads the second by more than ``margin`` (no near-ties)."""
    top2 = logits.topk(2, dim=0).values
    return top2[0] - top2[1] > margin
