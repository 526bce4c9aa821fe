"""Other implementations of our workload that the benchmark compares against."""
from inspect import signature
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import nn

from ..models.backbones import DINOv2, DINOv3
from ..models.utils import Attention, Rope, swiglu_hidden_dims

REFERENCES = ('timm-peft', 'naive-attention', 'no-lora')
BACKBONES = dict(DINOv2=DINOv2, DINOv3=DINOv3)
TIMM_NAMES = dict(small='vit_small_patch14', base='vit_base_patch14',
                  large='vit_large_patch14', giant='vit_giant_patch14')


def naive_attention_forward(self: Attention, x: torch.Tensor, rope: Optional[Rope] = None,
                            attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``Attention.forward`` with the attention matrix materialised."""
    B, N, C = x.shape
    q, k, v = self.heads(x, rope)
    scores = (q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float('-inf'))
    weights = scores.softmax(dim=-1)
    return self.proj((weights @ v).transpose(1, 2).reshape(B, N, C))


def check_reference(cfg: Config, reference: str, img_size: Sequence[int],
                    config_name: str) -> List[str]:
    """Notes on how ``reference`` differs from the model of ``cfg`` (file ``config_name``)
    at ``img_size``; ValueError saying why where it cannot replace it, ImportError
    naming a missing package of ``timm-peft``."""
    backbone = cfg.model.backbone
    if backbone.type not in BACKBONES:
        raise ValueError(f'--reference {reference} replaces a DINOv2 or DINOv3 backbone; '
                         f'{config_name} builds {backbone.type}')
    if reference == 'naive-attention':
        return ['naive-attention: our model with softmax(QK^T/sqrt(d))V materialised '
                'instead of F.scaled_dot_product_attention']
    lora = backbone.get('lora')
    if not lora:
        raise ValueError(f'--reference {reference} compares against LoRA adapters; '
                         f'{config_name} has no model.backbone.lora')
    if reference == 'no-lora':
        return ['no-lora: our model without model.backbone.lora']
    patch = backbone.get('patch_size',
                         signature(BACKBONES[backbone.type]).parameters['patch_size'].default)
    if any(side % patch for side in img_size):
        raise ValueError(f'--reference timm-peft needs --img-size multiples of {patch} '
                         f'(timm does not pad), got {img_size}')
    import_timm_peft()
    notes = ['timm-peft: peft cannot adapt the q/k/v thirds of the fused qkv separately; '
             f'it adapts all of qkv with rank {lora.get("rank", 4)} (ours: '
             f'{", ".join(lora.get("targets", ("q", "v")))})']
    if backbone.type == 'DINOv2':
        notes.append('timm-peft: timm builds its position embedding at the input size (no '
                     'resizing in the forward pass, fewer parameters); ours resizes the '
                     'trained grid each forward pass')
    elif _dinov3_arch(backbone).get('qkv_bias', True):
        notes.append('timm-peft: timm adds the qkv bias after the projection '
                     '(qkv_bias_separate), one more pass over its output: fused into the '
                     'projection, it would bypass the adapter peft puts on qkv')
    neck, head = cfg.model.get('neck'), cfg.model.decode_head.type
    if neck or head != 'LinearHead':
        ours = f'{neck.type} + {head}' if neck else head
        notes.append(f'timm-peft: its head is a 1x1 convolution on the last block; ours is '
                     f'{ours}, whose cost the time ratio includes')
    if backbone.get('spatial_prior'):
        notes.append('timm-peft: its backbone has no spatial prior; ours has one, whose cost '
                     'the time ratio includes')
    return notes


def import_timm_peft():
    """``(timm, peft)``, or an ImportError that names the missing package."""
    try:
        import peft
        import timm
    except ImportError as error:
        raise ImportError(f'--reference timm-peft needs the package {error.name!r}: '
                          f'pip install {error.name} (or pip install -e ".[bench]")') from error
    return timm, peft


class TimmPeftSegmentor(nn.Module):
    """The ``timm-peft`` reference: a timm ViT wrapped by ``peft.get_peft_model``
    (``backbone``) and a 1x1-conv head of ``num_classes``."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(backbone.embed_dim, num_classes, 1)

    def merge_lora(self) -> None:
        """Fold the adapters into the weights (peft's ``merge_and_unload``)."""
        self.backbone = self.backbone.merge_and_unload()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        p = self.backbone.patch_embed.patch_size[0]
        tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens:]
        features = tokens.transpose(1, 2).reshape(B, -1, H // p, W // p)
        return F.interpolate(self.head(features), size=(H, W), mode='bilinear',
                             align_corners=False)


def _dinov3_arch(backbone: Dict) -> Dict:
    """The arch settings of a DINOv3 backbone config (a name of the zoo or a dict)."""
    arch = backbone.get('arch', 'large')
    return DINOv3.arch_zoo[arch] if isinstance(arch, str) else arch


def timm_dinov2(timm, backbone: Dict, img_size: Sequence[int]) -> nn.Module:
    """timm's DINOv2 of a DINOv2 backbone config, its position embedding for ``img_size``."""
    arch, reg = backbone.get('arch', 'large'), backbone.get('num_register_tokens', 0)
    if isinstance(arch, str):
        name, sizes = TIMM_NAMES[arch], {}
    else:
        name = 'vit_giant_patch14' if arch.get('ffn_type') == 'swiglu' else 'vit_small_patch14'
        sizes = dict(embed_dim=arch['embed_dims'], depth=arch['num_layers'],
                     num_heads=arch['num_heads'])
    return timm.create_model(name + ('_reg4_dinov2' if reg else '_dinov2'), pretrained=False,
                             num_classes=0, img_size=tuple(img_size), reg_tokens=reg, **sizes)


def timm_dinov3(timm, backbone: Dict) -> nn.Module:
    """timm's DINOv3 of a DINOv3 backbone config, the qkv bias added after the projection
    so that an adapter on ``qkv`` takes part."""
    arch = _dinov3_arch(backbone)
    C, swiglu = arch['embed_dims'], arch.get('ffn_type', 'mlp') == 'swiglu'
    hidden = int(C * arch.get('mlp_ratio', 4.0))
    if swiglu:  # timm's SwiGLU takes the width as it is
        hidden = swiglu_hidden_dims(hidden, arch.get('swiglu_align', 8))
    qkv_bias = arch.get('qkv_bias', True)
    name = 'vit_small_plus_patch16_dinov3' if swiglu else 'vit_small_patch16_dinov3'
    # timm's hidden width is int(embed_dim * mlp_ratio): half a unit above ours gives ours
    vit = timm.create_model(name + ('_qkvb' if qkv_bias else ''), pretrained=False,
                            num_classes=0, embed_dim=C, depth=arch['num_layers'],
                            num_heads=arch['num_heads'], mlp_ratio=(hidden + 0.5) / C,
                            num_reg_tokens=backbone.get('num_storage_tokens', 4))
    if qkv_bias:  # else timm computes F.linear(x, qkv.weight, bias), bypassing qkv's forward
        for block in vit.blocks:
            block.attn.qkv_bias_separate = True
    return vit


def build_timm_peft(cfg: Config, img_size: Sequence[int]) -> TimmPeftSegmentor:
    """timm's DINOv2 or DINOv3 of the config's backbone (its DINOv2 position embedding for
    ``img_size``), peft LoRA on ``qkv``, and a 1x1 head."""
    timm, peft = import_timm_peft()
    backbone = cfg.model.backbone
    vit = (timm_dinov2(timm, backbone, img_size) if backbone.type == 'DINOv2'
           else timm_dinov3(timm, backbone))
    vit.set_grad_checkpointing(backbone.get('with_cp', False))
    lora = backbone.lora
    layers = lora.get('layers')
    targets = ['qkv'] if layers is None else [
        f'blocks.{i % len(vit.blocks)}.attn.qkv' for i in layers]
    config = peft.LoraConfig(r=lora.get('rank', 4), lora_alpha=lora.get('alpha', 4.0),
                             lora_dropout=lora.get('dropout', 0.0), target_modules=targets)
    return TimmPeftSegmentor(peft.get_peft_model(vit, config),
                             cfg.model.decode_head.num_classes)
