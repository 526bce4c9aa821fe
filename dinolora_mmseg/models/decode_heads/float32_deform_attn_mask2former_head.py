from typing import Any

import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.layers import DeformableDetrTransformerEncoderLayer
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.registry import MODELS


class Float32MultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` computing under autocast in its weights'
    dtype (float32): mmcv's CUDA kernels have no bfloat16 (``not implemented for
    'BFloat16'``)."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        weight = self.value_proj.weight
        if not torch.is_autocast_enabled(weight.device.type):
            return super().forward(*args, **kwargs)

        def cast(value):
            return value.to(weight.dtype) if torch.is_tensor(
                value) and value.is_floating_point() else value

        with torch.autocast(weight.device.type, enabled=False):
            return super().forward(*map(cast, args),
                                   **{key: cast(value) for key, value in kwargs.items()})


@MODELS.register_module()
class Float32DeformAttnMask2FormerHead(Mask2FormerHead):
    """MMSeg's ``Mask2FormerHead`` whose pixel decoder's deformable attention computes in
    float32 under autocast, so that ``--amp`` (bfloat16) runs on a GPU. Same parameters
    and checkpoint keys.

    Args:
        **kwargs: Those of MMSeg's ``Mask2FormerHead``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for layer in self.pixel_decoder.modules():
            if isinstance(layer, DeformableDetrTransformerEncoderLayer):
                layer.self_attn = Float32MultiScaleDeformableAttention(**layer.self_attn_cfg)
