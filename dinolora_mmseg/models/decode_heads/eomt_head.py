from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.registry import TASK_UTILS
from mmengine.model import BaseModule
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.registry import MODELS
from torch import nn

Predictions = Tuple[List[torch.Tensor], List[torch.Tensor]]


class Upsample2x(nn.Module):
    """One learned 2x upscaling of a feature map: a 2x2 transposed convolution of stride
    2, GELU, a 3x3 depthwise convolution and a LayerNorm over the channels.

    Args:
        channels (int): Channels in and out.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size=3, padding=1,
                                groups=channels, bias=False)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dwconv(self.act(self.up(x)))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@MODELS.register_module()
class EoMTHead(Mask2FormerHead):
    """The prediction part of EoMT (Kerssies et al., CVPR 2025): learnable queries that
    the :class:`EoMT` segmentor puts into the ViT's last blocks, and, from the tokens of
    any block, class logits of every query (a linear layer, ``num_classes + 1`` with
    no-object) and its mask logits (an MLP on the query dotted with the patch features
    upscaled ``2 ** num_upscale`` times, stride ``patch / 4`` with the default 2).

    The losses (Hungarian matching, class cross-entropy, mask BCE and dice on sampled
    points, one set per prediction: ``loss_*`` for the last, ``d{i}.loss_*`` for the
    earlier ones), the conversion of seg maps into per-class masks and the semantic
    prediction (softmax class scores without no-object times sigmoid masks, summed over
    queries, at the padded input size) are those of MMSeg's ``Mask2FormerHead`` and
    mmdet's, inherited; its pixel decoder and transformer decoder are not built.

    ``forward`` takes what :meth:`EoMT.extract_feat` returns, ``(class logits, mask
    logits)``, one entry per prediction, and returns it unchanged: the predictions are
    made between the backbone's blocks by :meth:`predict_queries`.

    Args:
        num_classes (int): Classes, without no-object.
        embed_dims (int): Token width of the backbone.
        loss_cls (dict): mmdet config of the class loss (its ``class_weight`` has
            ``num_classes + 1`` entries, no-object last).
        loss_mask (dict): mmdet config of the mask loss on sampled points.
        loss_dice (dict): mmdet config of the dice loss on sampled points.
        train_cfg (dict): ``assigner``, ``sampler`` (mmdet configs), ``num_points``,
            ``oversample_ratio``, ``importance_sample_ratio``.
        num_queries (int): Learnable queries.
        num_upscale (int): Learned 2x upscaling steps of the patch features for the masks.
        align_corners (bool): For MMSeg's resizing of the predictions.
        ignore_index (int): Label left out of the targets.
        test_cfg (dict, optional): Unused, as in ``Mask2FormerHead``.
        init_cfg (dict, optional): MMEngine initialisation config.
    """

    def __init__(self,
                 num_classes: int,
                 embed_dims: int,
                 loss_cls: Dict,
                 loss_mask: Dict,
                 loss_dice: Dict,
                 train_cfg: Dict,
                 num_queries: int = 100,
                 num_upscale: int = 2,
                 align_corners: bool = False,
                 ignore_index: int = 255,
                 test_cfg: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None):
        # Mask2FormerHead.__init__ would build its pixel and transformer decoders.
        BaseModule.__init__(self, init_cfg=init_cfg)
        for name, value in (('num_classes', num_classes), ('embed_dims', embed_dims),
                            ('num_queries', num_queries)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'EoMTHead {name} must be a positive int, got {value!r}')
        if not isinstance(num_upscale, int) or num_upscale < 0:
            raise ValueError(f'EoMTHead num_upscale must be a non-negative int, got '
                             f'{num_upscale!r}')
        missing = {'assigner', 'sampler'} - set(train_cfg)
        if missing:
            raise ValueError(f'EoMTHead train_cfg needs {sorted(missing)} (mmdet configs, as '
                             f'MMSeg\'s Mask2FormerHead takes them), got {dict(train_cfg)!r}')
        self.num_classes = self.out_channels = num_classes
        self.embed_dims = embed_dims
        self.num_queries = num_queries
        self.align_corners = align_corners
        self.ignore_index = ignore_index
        self.train_cfg, self.test_cfg = train_cfg, test_cfg

        self.query_embed = nn.Embedding(num_queries, embed_dims)
        self.cls_embed = nn.Linear(embed_dims, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(embed_dims, embed_dims), nn.GELU(),
            nn.Linear(embed_dims, embed_dims), nn.GELU(),
            nn.Linear(embed_dims, embed_dims))
        self.upscale = nn.Sequential(*(Upsample2x(embed_dims) for _ in range(num_upscale)))

        self.assigner = TASK_UTILS.build(train_cfg['assigner'])
        self.sampler = TASK_UTILS.build(train_cfg['sampler'], default_args=dict(context=self))
        self.num_points = train_cfg.get('num_points', 12544)
        self.oversample_ratio = train_cfg.get('oversample_ratio', 3.0)
        self.importance_sample_ratio = train_cfg.get('importance_sample_ratio', 0.75)
        class_weight = loss_cls.get('class_weight')
        if class_weight is None or len(class_weight) != num_classes + 1:
            raise ValueError(f'EoMTHead loss_cls.class_weight must have num_classes + 1 = '
                             f'{num_classes + 1} entries (no-object last), got '
                             f'{None if class_weight is None else len(class_weight)}')
        self.class_weight = class_weight
        self.loss_cls = MMDET_MODELS.build(loss_cls)
        self.loss_mask = MMDET_MODELS.build(loss_mask)
        self.loss_dice = MMDET_MODELS.build(loss_dice)

    def init_weights(self) -> None:
        """PyTorch's default initialisation (or ``init_cfg``); no decoders to set up."""
        BaseModule.init_weights(self)

    def predict_queries(self, tokens: torch.Tensor, h: int,
                        w: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class and mask logits from normalised tokens ``[queries, prefix, patches]``.

        Args:
            tokens (torch.Tensor): ``(B, num_queries + P + h * w, embed_dims)``.
            h (int): Patch rows.
            w (int): Patch columns.

        Returns:
            tuple: Class logits ``(B, num_queries, num_classes + 1)`` and mask logits
            ``(B, num_queries, h * 2**num_upscale, w * 2**num_upscale)``.
        """
        B, _, C = tokens.shape
        queries = tokens[:, :self.num_queries]
        patches = tokens[:, tokens.shape[1] - h * w:].transpose(1, 2).reshape(B, C, h, w)
        masks = torch.einsum('bqc,bchw->bqhw', self.mask_embed(queries), self.upscale(patches))
        return self.cls_embed(queries), masks

    def forward(self, x: Predictions,
                batch_data_samples: Optional[Sequence] = None) -> Predictions:
        """The predictions :meth:`EoMT.extract_feat` made, unchanged.

        Args:
            x (tuple): Lists of class logits and of mask logits, the last the final.
            batch_data_samples (list, optional): Unused.
        """
        return x
