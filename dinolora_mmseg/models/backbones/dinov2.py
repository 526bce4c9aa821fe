import math
from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import nn

from ..utils import FusedSwiGLUFFN, Mlp
from .dino_vit_base import DINOViTBase

OFFICIAL_URL = 'https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{s}14/dinov2_vit{s}14{reg}_pretrain.pth'


@MODELS.register_module()
class DINOv2(DINOViTBase):
    """DINOv2 vision transformer with optional LoRA adapters.

    The official ``dinov2_vit{s,b,l,g}14[_reg4]``, loading their released checkpoints
    as they are; outputs as the official ``get_intermediate_layers(..., reshape=True,
    norm=final_norm)``: ``(B, C, ceil(H/14), ceil(W/14))``. Positions are a learned 37x37
    grid, resized; register tokens follow the class token and get none. Inputs are
    zero-padded at the bottom and right to multiples of 14, never cropped.

    Args:
        arch (str | dict): ``'small'``, ``'base'``, ``'large'``, ``'giant'`` or a dict,
            see :class:`DINOViTBase`.
        num_register_tokens (int): Register tokens (4 for the ``_reg4`` releases).
        img_size (int): Image side the position grid was trained for (518: 37x37).
        patch_size (int): Patch side in pixels.
        interpolate_antialias (bool, optional): Antialiased bicubic resizing of the
            position embedding. Default: as the official variant (True with registers).
        interpolate_offset (float, optional): The official ``+0.1`` offset of the resize
            scale factor (0: the exact grid). Default: as the official variant.
        **kwargs: See :class:`DINOViTBase`. For the SwiGLU ViT-g, LoRA target ``'fc1'``
            adapts ``w12`` and ``'fc2'`` ``w3``.
    """

    family = 'DINOv2'
    arch_zoo = {
        'small': dict(embed_dims=384, num_layers=12, num_heads=6),
        'base': dict(embed_dims=768, num_layers=12, num_heads=12),
        'large': dict(embed_dims=1024, num_layers=24, num_heads=16),
        'giant': dict(embed_dims=1536, num_layers=40, num_heads=24, ffn_type='swiglu'),
    }
    ffn_layers = {'mlp': Mlp, 'swiglu': FusedSwiGLUFFN}

    def __init__(self,
                 arch: Union[str, Dict] = 'large',
                 num_register_tokens: int = 0,
                 img_size: int = 518,
                 patch_size: int = 14,
                 interpolate_antialias: Optional[bool] = None,
                 interpolate_offset: Optional[float] = None,
                 **kwargs):
        self.num_register_tokens = self._token_count('num_register_tokens', num_register_tokens)
        self.pos_grid = img_size // patch_size
        self.interpolate_antialias = (num_register_tokens > 0 if interpolate_antialias is None
                                      else interpolate_antialias)
        self.interpolate_offset = ((0.0 if num_register_tokens > 0 else 0.1)
                                   if interpolate_offset is None else interpolate_offset)
        super().__init__(arch, patch_size, **kwargs)

    def _build_tokens(self) -> None:
        C = self.embed_dims
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid**2, C))
        if self.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, self.num_register_tokens, C))

    def _init_tokens(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.num_register_tokens:
            nn.init.normal_(self.register_tokens, std=1e-6)

    def _describe(self) -> str:
        return f'{super()._describe()}, num_register_tokens={self.num_register_tokens}'

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    @staticmethod
    def official_url(arch: str, num_register_tokens: int = 0) -> str:
        """Download address of the official checkpoint of ``arch`` (S/B/L/g)."""
        return OFFICIAL_URL.format(s=arch[0], reg={0: '', 4: '_reg4'}[num_register_tokens])

    def _from_official(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The official layout is ours, plus ``mask_token`` (masked-image training only)."""
        state.pop('mask_token', None)
        return state

    def _to_official(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Ours plus a zero ``mask_token`` (used in training only)."""
        return dict(state, mask_token=torch.zeros(1, self.embed_dims, dtype=self.cls_token.dtype))

    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """Position embedding (class slot first) for an ``h`` x ``w`` patch grid, resized
        as the official ``interpolate_pos_encoding`` does."""
        grid = math.isqrt(self.pos_embed.shape[1] - 1)
        if h == w == grid:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        patch_pos = pos_embed[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            resize = dict(scale_factor=((h + self.interpolate_offset) / grid,
                                        (w + self.interpolate_offset) / grid))
        else:
            resize = dict(size=(h, w))
        patch_pos = F.interpolate(patch_pos, mode='bicubic',
                                  antialias=self.interpolate_antialias, **resize)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pos_embed[:, :1], patch_pos], dim=1).to(self.pos_embed.dtype)

    def _prepare_tokens(self, patches: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``[class, registers, patches]``; positions added before the registers go in."""
        B = patches.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1), patches], dim=1)
        x = x + self.interpolate_pos_encoding(h, w)
        if self.num_register_tokens:
            x = torch.cat([x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]], dim=1)
        return x
