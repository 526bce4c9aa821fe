from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import nn


def interpolation_matrix(size_in: int, size_out: int, align_corners: bool,
                         device: torch.device) -> torch.Tensor:
    """``(size_out, size_in)`` matrix of ``F.interpolate``'s 1-D linear interpolation
    (the identity, interpolated).

    Args:
        size_in (int): Input length.
        size_out (int): Output length.
        align_corners (bool): As in ``F.interpolate``.
        device (torch.device): Where to make it.
    """
    identity = torch.eye(size_in, device=device).unsqueeze(0)
    return F.interpolate(identity, size=size_out, mode='linear',
                         align_corners=align_corners)[0].T


def bilinear_resize(x: torch.Tensor, size: Sequence[int], align_corners: bool) -> torch.Tensor:
    """``F.interpolate(x, size, mode='bilinear')`` as two matrix products, in float32.

    ``M_h @ x @ M_w^T``, whose backward pass is several times cheaper on CPU than
    ``upsample_bilinear2d_backward`` (docs/performance.md); equal within float rounding.

    Args:
        x (torch.Tensor): ``(N, C, h, w)`` input.
        size (Sequence[int]): ``(H, W)`` of the output.
        align_corners (bool): As in ``F.interpolate``.
    """
    (h, w), (H, W) = x.shape[-2:], size
    with torch.autocast(x.device.type, enabled=False):
        rows = interpolation_matrix(h, H, align_corners, x.device)
        cols = interpolation_matrix(w, W, align_corners, x.device)
        return rows @ (x.float() @ cols.T)


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor,
                  ignore_index: int) -> torch.Tensor:
    """Percentage of labelled pixels whose label has the largest logit.

    MMSeg's ``accuracy(logits, labels, ignore_index=...)`` from a max over classes
    instead of a costlier top-k (docs/performance.md); a tie for the largest logit
    counts as correct when the label is one of the tied classes.

    Args:
        logits (torch.Tensor): ``(N, C, H, W)`` scores.
        labels (torch.Tensor): ``(N, H, W)`` class indices.
        ignore_index (int): Label of pixels left out of the count.
    """
    labelled = labels != ignore_index
    label_logit = logits.gather(1, labels.masked_fill(~labelled, 0).unsqueeze(1)).squeeze(1)
    correct = (label_logit >= logits.amax(1)) & labelled
    return _percentage(correct, labelled)


def binary_accuracy(logits: torch.Tensor, labels: torch.Tensor, threshold: float,
                    ignore_index: int) -> torch.Tensor:
    """:func:`top1_accuracy` of MMSeg's binary mode: ``(N, 1, H, W)`` logits, labels 0
    and 1, class 1 where ``sigmoid(logit) > threshold``."""
    labelled = labels != ignore_index
    predicted = logits.squeeze(1).sigmoid() > threshold
    return _percentage((predicted == labels.bool()) & labelled, labelled)


def _percentage(correct: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """``100 * correct / labelled`` with MMSeg's epsilon and shape ``(1,)``."""
    eps = torch.finfo(torch.float32).eps
    total = labelled.sum().item() + eps
    return (correct.sum().float().reshape(1) + eps).mul_(100.0 / total)


@MODELS.register_module()
class LinearHead(BaseDecodeHead):
    """A 1x1 convolution over backbone features: DINOv2's linear segmentation head.

    Several inputs (``input_transform='resize_concat'``, as DINOv2's "+ms" head) are
    resized and concatenated; ``norm_cfg`` (e.g. BatchNorm, as DINOv2's linear
    evaluation) adds a norm before the convolution. The rest is :class:`BaseDecodeHead`,
    with a faster training loss (:meth:`loss_by_feat`).

    Args:
        in_channels (int | Sequence[int]): Width of each input.
        channels (int, optional): Must be the total input width (no hidden layer).
        **kwargs: :class:`BaseDecodeHead`'s; ``dropout_ratio`` defaults to 0.
    """

    def __init__(self, in_channels: Union[int, Sequence[int]],
                 channels: Optional[int] = None, **kwargs):
        kwargs.setdefault('dropout_ratio', 0.0)
        width = in_channels if isinstance(in_channels, int) else sum(in_channels)
        if channels is not None and channels != width:
            raise ValueError(
                f'LinearHead got channels={channels}, but a linear head has no hidden layer: '
                f'it works at its input width, {width} (the sum of in_channels). Leave '
                'channels out; for a hidden layer use e.g. FCNHead')
        super().__init__(in_channels=in_channels, channels=width, **kwargs)
        self.norm = (build_norm_layer(self.norm_cfg, width)[1]
                     if self.norm_cfg else nn.Identity())

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self.norm(self._transform_inputs(inputs)))

    def loss_by_feat(self, seg_logits: torch.Tensor,
                     batch_data_samples: SampleList) -> dict:
        """:meth:`BaseDecodeHead.loss_by_feat` with :func:`bilinear_resize` and
        :func:`top1_accuracy` (:func:`binary_accuracy` with ``out_channels=1``)."""
        seg_label = self._stack_batch_gt(batch_data_samples)
        seg_logits = bilinear_resize(seg_logits, seg_label.shape[2:], self.align_corners)
        seg_weight = None if self.sampler is None else self.sampler.sample(seg_logits, seg_label)
        seg_label = seg_label.squeeze(1)
        losses = dict()
        losses_decode = (self.loss_decode if isinstance(self.loss_decode, nn.ModuleList)
                         else [self.loss_decode])
        for loss_decode in losses_decode:
            value = loss_decode(seg_logits, seg_label, weight=seg_weight,
                                ignore_index=self.ignore_index)
            name = loss_decode.loss_name
            losses[name] = losses[name] + value if name in losses else value
        if self.out_channels == 1:
            losses['acc_seg'] = binary_accuracy(seg_logits, seg_label, self.threshold,
                                                self.ignore_index)
        else:
            losses['acc_seg'] = top1_accuracy(seg_logits, seg_label, self.ignore_index)
        return losses
