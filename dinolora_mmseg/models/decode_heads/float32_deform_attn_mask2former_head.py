from typing import Any

import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.layers import DeformableDetrTransformerEncoderLayer
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.registry import MODELS


class Float32MultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` that, under autocast, computes in the dtype
    of its weights (float32) with autocast off.

    mmcv's CUDA kernels of the op have float32, float64 and float16 only; a bfloat16
    autocast would hand them bfloat16 values (``not implemented for 'BFloat16'``).
    Without autocast it is mmcv's module unchanged.
    """

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
    """MMSeg's ``Mask2FormerHead`` whose pixel decoder computes its deformable attention
    in float32 under autocast (:class:`Float32MultiScaleDeformableAttention`), so that
    ``--amp`` (bfloat16) trains and tests on a GPU; the rest of the head autocasts as
    before. Same arguments, parameters and checkpoint keys as ``Mask2FormerHead``.

    Args:
        **kwargs: Those of MMSeg's ``Mask2FormerHead`` (mmdet's pixel decoder is built
            from ``pixel_decoder``; its encoder layers' ``self_attn_cfg`` builds the
            float32 attention in place of mmcv's).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for layer in self.pixel_decoder.modules():
            if isinstance(layer, DeformableDetrTransformerEncoderLayer):
                layer.self_attn = Float32MultiScaleDeformableAttention(**layer.self_attn_cfg)
