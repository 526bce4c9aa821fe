from typing import Dict, List, Tuple

import torch
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import nn


class SpatialPrior(BaseModule):
    """A small convolutional stem that sees the image at strides 4, 8, 16 and 32.

    ViT-Adapter's spatial prior module: local detail for a pixel decoder's pyramid from
    three 3x3 convolutions and a max-pool to stride 4, then a stride-2 convolution per
    level. The maps have :attr:`out_channels` ``(c, 2c, 4c, 4c)`` channels and
    ``ceil(H / stride)`` x ``ceil(W / stride)`` pixels.

    Args:
        in_channels (int): Image channels.
        channels (int): Width of the stride-4 map.
        norm_cfg (dict): Normalisation after each convolution.
        act_cfg (dict): Activation after each normalisation.
        init_cfg (dict, optional): MMEngine initialisation config.
    """

    strides = (4, 8, 16, 32)

    def __init__(self,
                 in_channels: int = 3,
                 channels: int = 64,
                 norm_cfg: Dict = dict(type='BN'),
                 act_cfg: Dict = dict(type='ReLU'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(channels, int) or channels <= 0:
            raise ValueError(f'spatial_prior channels must be a positive int, got {channels!r}')
        self.out_channels: Tuple[int, ...] = (channels, 2 * channels, 4 * channels, 4 * channels)
        conv = dict(kernel_size=3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.stem = nn.Sequential(
            ConvModule(in_channels, channels, stride=2, **conv),
            ConvModule(channels, channels, **conv),
            ConvModule(channels, channels, **conv),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.downsamples = nn.ModuleList(
            ConvModule(width_in, width_out, stride=2, **conv)
            for width_in, width_out in zip(self.out_channels[:-1], self.out_channels[1:]))

    def forward(self, image: torch.Tensor) -> List[torch.Tensor]:
        maps = [self.stem(image)]
        for downsample in self.downsamples:
            maps.append(downsample(maps[-1]))
        return maps
