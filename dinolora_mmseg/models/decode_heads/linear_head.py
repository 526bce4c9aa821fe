from typing import List, Sequence, Union

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import nn


@MODELS.register_module()
class LinearHead(BaseDecodeHead):
    """A 1x1 convolution over backbone features: DINOv2's linear segmentation head.

    With several inputs (``in_index`` a list and ``input_transform='resize_concat'``,
    as in DINOv2's multi-layer "+ms" head over the last four blocks) the inputs are
    resized to the first one's size and concatenated. An optional normalisation layer
    (``norm_cfg``, e.g. BatchNorm as in DINOv2's linear evaluation) comes before the
    convolution. Everything else (dropout, loss, resizing of the logits) is MMSeg's
    :class:`BaseDecodeHead`.

    Args:
        in_channels (int | Sequence[int]): Width of each input.
        **kwargs: :class:`BaseDecodeHead` arguments, except ``channels``, which is the
            total input width. ``dropout_ratio`` defaults to 0.
    """

    def __init__(self, in_channels: Union[int, Sequence[int]], **kwargs):
        kwargs.setdefault('dropout_ratio', 0.0)
        channels = in_channels if isinstance(in_channels, int) else sum(in_channels)
        super().__init__(in_channels=in_channels, channels=channels, **kwargs)
        self.norm = (build_norm_layer(self.norm_cfg, channels)[1]
                     if self.norm_cfg else nn.Identity())

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self.norm(self._transform_inputs(inputs)))
