import logging
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

from ..decode_heads.eomt_head import Predictions


def mask_probability(iteration: int, start: int, end: int, power: float = 0.9) -> float:
    """Probability that a block's queries attend through their masks at ``iteration``:
    1 before ``start``, ``(1 - (iteration - start) / (end - start)) ** power`` in between,
    0 from ``end`` on.

    Args:
        iteration (int): Training iteration (0-based, as ``runner.iter``).
        start (int): First iteration of the decay.
        end (int): First iteration without masks.
        power (float): Polynomial power.
    """
    if iteration < start:
        return 1.0
    if iteration >= end:
        return 0.0
    return (1.0 - (iteration - start) / (end - start))**power


@MODELS.register_module()
class EoMT(EncoderDecoder):
    """Encoder-only mask transformer (EoMT, Kerssies et al., CVPR 2025) on a DINO ViT.

    The head's learnable queries join the tokens (in front, so no rotary position reaches
    them) before the last ``num_blocks`` blocks, which run frozen + LoRA as all blocks do.
    While training, the head predicts class and mask logits from the final-normed tokens
    before each of those blocks (deep supervision) and after the last; before each such
    block a query may attend only the patches where its mask logit, resized to the patch
    grid, is positive, each query with the block's mask probability
    (:func:`mask_probability` of the iteration that :meth:`set_iteration` was given,
    by :class:`EoMTMaskAnnealingHook` in training). In eval mode no mask and no earlier
    prediction is made: one plain ViT forward, then the head on the final tokens.

    ``extract_feat`` returns the predictions; MMSeg's ``EncoderDecoder`` does the rest
    (losses through the head, whole or slide inference, cropping the padding).

    Args:
        backbone (dict): A :class:`DINOv2` or :class:`DINOv3` config whose
            ``out_indices`` include the last block (LoRA covers every block).
        decode_head (dict): An :class:`EoMTHead` config with the backbone's width.
        num_blocks (int): Last blocks that see the queries (4 for ViT-L in the paper).
        mask_annealing (dict, optional): ``start_iters`` and ``end_iters`` (one per
            query block, first block first) and ``power`` (0.9) of the mask schedule;
            None trains without masked attention.
        train_cfg (dict, optional): MMSeg's segmentor train config.
        test_cfg (dict, optional): MMSeg's segmentor test config (``mode``).
        data_preprocessor (dict, optional): MMSeg's data preprocessor config.
        pretrained (str, optional): Left None; the backbone loads its own file.
        init_cfg (dict, optional): MMEngine initialisation config.
    """

    def __init__(self,
                 backbone: Dict,
                 decode_head: Dict,
                 num_blocks: int = 4,
                 mask_annealing: Optional[Dict] = None,
                 train_cfg: Optional[Dict] = None,
                 test_cfg: Optional[Dict] = None,
                 data_preprocessor: Optional[Dict] = None,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Dict] = None,
                 neck: Optional[Dict] = None,
                 auxiliary_head: Optional[Dict] = None):
        if neck is not None or auxiliary_head is not None:
            raise ValueError('EoMT takes no neck and no auxiliary_head (its head reads the '
                             f'ViT tokens), got neck={neck!r}, auxiliary_head={auxiliary_head!r}')
        super().__init__(backbone=backbone, decode_head=decode_head, train_cfg=train_cfg,
                         test_cfg=test_cfg, data_preprocessor=data_preprocessor,
                         pretrained=pretrained, init_cfg=init_cfg)
        vit, head = self.backbone, self.decode_head
        if not hasattr(vit, 'prepare_tokens'):
            raise TypeError(f'EoMT needs a DINOv2 or DINOv3 backbone, got {type(vit).__name__}')
        if not isinstance(num_blocks, int) or not 1 <= num_blocks <= vit.num_layers:
            raise ValueError(f'EoMT num_blocks must be an int in 1..{vit.num_layers} (the '
                             f'backbone depth), got {num_blocks!r}')
        if max(vit.out_indices) != vit.num_layers - 1:
            raise ValueError(f'EoMT runs every block: backbone out_indices must include the '
                             f'last block {vit.num_layers - 1} (e.g. -1), got '
                             f'{list(vit.out_indices)}')
        if getattr(head, 'embed_dims', None) != vit.embed_dims:
            raise ValueError(f'decode_head.embed_dims must be the backbone width '
                             f'{vit.embed_dims}, got {getattr(head, "embed_dims", None)!r}')
        self.num_blocks = num_blocks
        self.mask_annealing = self._check_annealing(mask_annealing, num_blocks)
        self.iteration: Optional[int] = None

    @staticmethod
    def _check_annealing(cfg: Optional[Dict], num_blocks: int) -> Optional[Dict]:
        if cfg is None:
            return None
        unknown = set(cfg) - {'start_iters', 'end_iters', 'power'}
        starts, ends = list(cfg.get('start_iters', ())), list(cfg.get('end_iters', ()))
        if unknown or len(starts) != num_blocks or len(ends) != num_blocks or any(
                not 0 <= s <= e for s, e in zip(starts, ends)):
            raise ValueError(f'EoMT mask_annealing must have start_iters and end_iters of '
                             f'num_blocks={num_blocks} entries each, 0 <= start <= end, and '
                             f'optionally power; got {dict(cfg)!r}')
        return dict(start_iters=starts, end_iters=ends, power=float(cfg.get('power', 0.9)))

    @property
    def mask_probs(self) -> List[float]:
        """Per query block, the probability of masked attention at :attr:`iteration`
        (that of iteration 0 before :meth:`set_iteration`)."""
        if self.mask_annealing is None:
            return [0.0] * self.num_blocks
        cfg = self.mask_annealing
        return [mask_probability(self.iteration or 0, start, end, cfg['power'])
                for start, end in zip(cfg['start_iters'], cfg['end_iters'])]

    def set_iteration(self, iteration: int) -> None:
        """Set the training iteration the mask probabilities follow.

        Args:
            iteration (int): ``runner.iter`` before the step.
        """
        self.iteration = iteration

    def _attention_mask(self, mask_logits: torch.Tensor, prob: float, num_tokens: int,
                        h: int, w: int) -> Optional[torch.Tensor]:
        """Boolean ``(B, 1, N, N)`` mask (True = attend): query rows see only the patches
        of their positive mask logits, each query with probability ``prob``."""
        if prob <= 0:
            return None
        with torch.no_grad():
            B, Q = mask_logits.shape[:2]
            allowed = F.interpolate(mask_logits.float(), (h, w), mode='bilinear',
                                    align_corners=False).flatten(2) > 0
            if prob < 1:
                unmasked = torch.rand(B, Q, 1, device=allowed.device) >= prob
                allowed = allowed | unmasked
            mask = torch.ones(B, 1, num_tokens, num_tokens, dtype=torch.bool,
                              device=allowed.device)
            mask[:, 0, :Q, num_tokens - h * w:] = allowed
        return mask

    def extract_feat(self, inputs: torch.Tensor) -> Predictions:
        """Class and mask logits: in training one pair before each query block and one
        after the last, in eval mode only the last.

        Args:
            inputs (torch.Tensor): Images ``(B, 3, H, W)``.
        """
        vit, head = self.backbone, self.decode_head
        first = vit.num_layers - self.num_blocks
        if self.training and self.iteration is None and self.mask_annealing is not None:
            self.iteration = 0
            print_log('EoMT trains without EoMTMaskAnnealingHook in custom_hooks: the '
                      'attention masks keep their iteration-0 probabilities', logger='current',
                      level=logging.WARNING)
        classes, masks, probs = [], [], self.mask_probs
        with vit.autocast():
            x, rope, h, w = vit.prepare_tokens(inputs)
            for index in range(vit.num_layers):
                attn_mask = None
                if index == first:
                    queries = head.query_embed.weight.to(x.dtype)
                    x = torch.cat([queries.expand(x.shape[0], -1, -1), x], dim=1)
                if self.training and index >= first:
                    cls_logits, mask_logits = head.predict_queries(vit.norm(x), h, w)
                    classes.append(cls_logits.float())
                    masks.append(mask_logits.float())
                    attn_mask = self._attention_mask(mask_logits, probs[index - first],
                                                     x.shape[1], h, w)
                x = vit.run_block(index, x, rope, attn_mask)
            cls_logits, mask_logits = head.predict_queries(vit.norm(x), h, w)
        classes.append(cls_logits.float())
        masks.append(mask_logits.float())
        return classes, masks
