"""A trained segmentor as one tensor function for deployment: RGB images in, logits out."""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from torch import nn

from ..models.backbones.dino_vit_base import DINOViTBase
from ..models.backbones.dinov2 import DINOv2
from ..models.builder import build_model, load_model_checkpoint
from ..models.lora import fold_lora
from ..utils.checkpoint_file import is_trusted


def class_scores(head: Union[BaseDecodeHead, Mask2FormerHead], feats: Sequence[torch.Tensor],
                 size: Sequence[int]) -> torch.Tensor:
    """The class scores ``(B, num_classes, *size)`` of a decode head on ``feats`` (what
    ``extract_feat`` gives), as its ``predict`` computes them (Mask2Former and EoMT: the
    semantic combination of the last prediction's class and mask probabilities)."""
    if isinstance(head, Mask2FormerHead):
        cls_scores, mask_logits = head(feats, [])  # its forward reads no data sample
        masks = F.interpolate(mask_logits[-1], size=size, mode='bilinear',
                              align_corners=False).sigmoid()
        probabilities = F.softmax(cls_scores[-1], dim=-1)[..., :-1]
        return torch.einsum('bqc,bqhw->bchw', probabilities, masks)
    return F.interpolate(head.forward(feats), size=size, mode='bilinear',
                         align_corners=head.align_corners)


class SegmentorGraph(nn.Module):
    """``logits = graph(images)``: what ``encode_decode`` returns for ``(B, 3, H, W)``
    float32 RGB images in 0..255 after the data preprocessor (``'whole'`` test mode).

    Args:
        segmentor (EncoderDecoder): The model, in evaluation mode.
        mean, std (Sequence[float], optional): The data preprocessor's, in the model's
            channel order; None for no normalisation.
        model_sees_rgb (bool): The data preprocessor's ``bgr_to_rgb``.
    """

    def __init__(self, segmentor: EncoderDecoder, mean: Optional[Sequence[float]],
                 std: Optional[Sequence[float]], model_sees_rgb: bool):
        super().__init__()
        self.segmentor = segmentor
        self.model_sees_rgb = model_sees_rgb
        self.normalise = mean is not None
        if self.normalise:
            self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images if self.model_sees_rgb else images[:, [2, 1, 0]]
        if self.normalise:
            x = (x - self.mean) / self.std
        return class_scores(self.segmentor.decode_head, self.segmentor.extract_feat(x),
                            x.shape[2:])


def _fixed_grid_table(value, grid: Tuple[int, int], what: str):
    """A stand-in for a method of a patch grid's positions: ``value``, for ``grid`` only."""
    def table(h: int, w: int):
        if (h, w) != grid:
            raise ValueError(f'this model was prepared for a {grid[0]}x{grid[1]} patch grid '
                             f'({what} precomputed), got {h}x{w}')
        return value
    return table


@torch.no_grad()
def fix_position_tables(backbone: nn.Module, image_size: Sequence[int]) -> None:
    """Make a DINO backbone's position embedding or RoPE tables constants for inputs of
    ``image_size`` ``(H, W)``, in place; other backbones are left as they are."""
    if not isinstance(backbone, DINOViTBase):
        return
    p = backbone.patch_size
    grid = (-(-image_size[0] // p), -(-image_size[1] // p))
    if isinstance(backbone, DINOv2):
        table = backbone.interpolate_pos_encoding(*grid).detach().clone()
        backbone.interpolate_pos_encoding = _fixed_grid_table(table, grid, 'position embedding')
    else:
        rope = tuple(t.detach().clone() for t in backbone._rope(*grid))
        backbone._rope = _fixed_grid_table(rope, grid, 'RoPE tables')


def check_deployable(cfg: Config, model: nn.Module) -> None:
    """Refuse a model that is not an ``EncoderDecoder`` in ``'whole'`` mode with a
    multi-class head (ValueError saying what to do)."""
    name = cfg.filename or 'the config'
    if not isinstance(model, EncoderDecoder) or type(model).encode_decode is not (
            EncoderDecoder.encode_decode):
        raise ValueError(f'{name}: model.type={cfg.model.type} cannot be exported; the '
                         'deployment tools take an EncoderDecoder')
    mode = model.test_cfg.get('mode', 'whole') if model.test_cfg else 'whole'
    if mode != 'whole':
        raise ValueError(f"{name}: model.test_cfg.mode={mode!r}; the exported model computes "
                         "one whole image. Export with --cfg-options model.test_cfg.mode=whole "
                         '(and a --shape such as the crop size)')
    if model.decode_head.out_channels == 1:
        raise ValueError(f'{name}: the decode head has one output channel (binary mode); the '
                         'deployment tools take multi-class heads')


def build_deploy_segmentor(cfg: Config, checkpoint: str) -> Tuple[EncoderDecoder, Dict]:
    """The model of ``cfg`` with ``checkpoint`` (:func:`build_model`), LoRA folded, BN for
    SyncBN, float32, in eval mode; and ``{'dataset_meta': ...}`` (``{}`` if it has none)."""
    model = build_model(cfg)
    check_deployable(cfg, model)
    load_model_checkpoint(model, checkpoint, trusted=is_trusted(cfg, checkpoint))
    model = revert_sync_batchnorm(model)
    fold_lora(model, inplace=True)
    if isinstance(model.backbone, DINOViTBase):
        model.backbone.frozen_dtype = None  # compute in float32, as the weights will be
    model.float().eval().requires_grad_(False)
    return model, {} if model.dataset_meta is None else dict(dataset_meta=model.dataset_meta)


def segmentor_graph(model: EncoderDecoder) -> SegmentorGraph:
    """The :class:`SegmentorGraph` of ``model`` with its data preprocessor's settings."""
    preprocessor = model.data_preprocessor
    normalise = getattr(preprocessor, '_enable_normalize', False)
    return SegmentorGraph(model, preprocessor.mean.flatten().tolist() if normalise else None,
                          preprocessor.std.flatten().tolist() if normalise else None,
                          getattr(preprocessor, 'channel_conversion', False)).eval()
