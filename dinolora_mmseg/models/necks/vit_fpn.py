import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule, constant_init
from mmseg.registry import MODELS
from torch import nn


@MODELS.register_module()
class ViTFPN(BaseModule):
    """A feature pyramid at true strides 4, 8, 16, 32 from plain ViT features.

    Each level is one ViT output upsampled by transposed convolutions (x2 each, halving
    the width) or max-pooled, then resized to exactly ``ceil(patch_size * grid /
    stride)``; MMSeg's :class:`FPN` fuses the levels. With ``prior_channels``, each
    spatial-prior map the backbone appends is added to its level through a 1x1
    convolution that starts at zero.

    Args:
        in_channels (int): Width of the ViT outputs.
        out_channels (int): Width of every pyramid level.
        num_inputs (int): 1 (every level from the same output) or one output per level.
        patch_size (int): Stride of the ViT outputs in pixels.
        strides (Sequence[int]): Strides of the pyramid levels in pixels.
        prior_channels (Sequence[int]): Widths of the spatial-prior maps after the ViT
            outputs (``SpatialPrior.out_channels``); empty for none.
        norm_cfg (dict): Normalisation between transposed convolutions and in the FPN.
        act_cfg (dict): Activation between transposed convolutions.
        init_cfg (dict, optional): MMEngine initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 num_inputs: int = 1,
                 patch_size: int = 14,
                 strides: Sequence[int] = (4, 8, 16, 32),
                 prior_channels: Sequence[int] = (),
                 norm_cfg: Dict = dict(type='BN', requires_grad=True),
                 act_cfg: Dict = dict(type='GELU'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if num_inputs not in (1, len(strides)):
            raise ValueError(f'ViTFPN takes 1 input or one per level ({len(strides)}), '
                             f'got num_inputs={num_inputs}')
        if prior_channels and len(prior_channels) != len(strides):
            raise ValueError(f'ViTFPN prior_channels needs one width per level '
                             f'({len(strides)}), got {list(prior_channels)}')
        self.num_inputs = num_inputs
        self.prior_channels = tuple(prior_channels)
        self.patch_size = patch_size
        self.strides = tuple(strides)
        self.rescales = nn.ModuleList()
        level_channels = []
        for stride in self.strides:
            steps = round(math.log2(patch_size / stride))
            layers, width = [], in_channels
            for step in range(steps):
                if step:
                    layers += [build_norm_layer(norm_cfg, width)[1],
                               build_activation_layer(act_cfg)]
                layers.append(nn.ConvTranspose2d(width, width // 2, 2, 2))
                width //= 2
            if steps < 0:
                layers.append(nn.MaxPool2d(2**-steps))
            self.rescales.append(nn.Sequential(*layers))
            level_channels.append(width)
        self.prior_projections = nn.ModuleList(
            nn.Conv2d(prior, level, 1) for prior, level in zip(prior_channels, level_channels))
        for projection in self.prior_projections:
            constant_init(projection, 0)
        self.fpn = MODELS.build(
            dict(type='FPN', in_channels=level_channels, out_channels=out_channels,
                 num_outs=len(self.strides), norm_cfg=norm_cfg))

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        self._check_inputs(inputs)
        priors = inputs[self.num_inputs:]
        height, width = (self.patch_size * s for s in inputs[0].shape[-2:])
        levels: List[torch.Tensor] = []
        for i, (stride, rescale) in enumerate(zip(self.strides, self.rescales)):
            x = rescale(inputs[i if self.num_inputs > 1 else 0])
            # Ceiling division of positives and a resize even to the same size: exact in an
            # ONNX export with symbolic sizes (its division truncates; it traces one branch).
            size = ((height + stride - 1) // stride, (width + stride - 1) // stride)
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
            if priors:
                prior = F.interpolate(priors[i], size=size, mode='bilinear', align_corners=False)
                x = x + self.prior_projections[i](prior)
            levels.append(x)
        return self.fpn(levels)

    def _check_inputs(self, inputs: Sequence[torch.Tensor]) -> None:
        expected = self.num_inputs + len(self.prior_channels)
        if len(inputs) != expected:
            prior = (f' and {len(self.prior_channels)} spatial-prior maps (backbone '
                     'spatial_prior=...)' if self.prior_channels else '')
            raise ValueError(f'ViTFPN expects {self.num_inputs} ViT output(s){prior}: '
                             f'{expected} inputs, got {len(inputs)}')
        for i, width in enumerate(self.prior_channels):
            got = inputs[self.num_inputs + i].shape[1]
            if got != width:
                raise ValueError(f'ViTFPN prior_channels[{i}] is {width}, but spatial-prior map '
                                 f'{i} has {got} channels; set prior_channels to the backbone\'s '
                                 'spatial_prior out_channels (c, 2c, 4c, 4c)')
