from functools import partial
from typing import Dict, Optional, Union

import torch
from mmseg.registry import MODELS
from torch import nn

from ..utils import Mlp, Rope, RopePositionEmbedding, SwiGLUFFN
from .dino_vit_base import DINOViTBase

# Official file names (DINOv3 License; personal download links from
# https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/).
OFFICIAL_FILES = {
    ('small', 'lvd1689m'): 'dinov3_vits16_pretrain_lvd1689m-08c60483.pth',
    ('small_plus', 'lvd1689m'): 'dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth',
    ('base', 'lvd1689m'): 'dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth',
    ('large', 'lvd1689m'): 'dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth',
    ('large', 'sat493m'): 'dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth',
    ('huge_plus', 'lvd1689m'): 'dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth',
    ('7b', 'lvd1689m'): 'dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth',
    ('7b', 'sat493m'): 'dinov3_vit7b16_pretrain_sat493m-a6675841.pth',
}


def _zero_key_rows(embed_dims: int, bias: torch.Tensor) -> torch.Tensor:
    """A qkv bias (or its gradient) with the key third zeroed."""
    bias = bias.clone()
    bias[embed_dims:2 * embed_dims] = 0
    return bias


@MODELS.register_module()
class DINOv3(DINOViTBase):
    """DINOv3 vision transformer with optional LoRA adapters.

    The official ``dinov3_vit{s,s+,b,l,h+,7b}16`` in evaluation, loading their released
    checkpoints (:data:`OFFICIAL_FILES`) as they are; outputs as :class:`DINOv2`'s, at
    stride 16. Against DINOv2: 4 storage tokens, RoPE on the patches' queries and keys
    instead of a learned position grid, LayerNorm eps 1e-5, a qkv bias with its key third
    masked to zero, SwiGLU with separate ``w1``/``w2`` for S+, H+ and 7B. Training-only
    tensors of the files (``mask_token``, ``local_cls_norm``) are not part of the model.

    Args:
        arch (str | dict): ``'small'``, ``'small_plus'``, ``'base'``, ``'large'``,
            ``'huge_plus'``, ``'7b'`` or a dict (see :class:`DINOViTBase`), which may
            also set ``swiglu_align`` (default 8), ``qkv_bias`` (default True) and
            ``local_cls_norm`` (the official model has one; default False).
        num_storage_tokens (int): Storage (register) tokens after the class token.
        patch_size (int): Patch side in pixels.
        rope_cfg (dict, optional): Overrides of the :class:`RopePositionEmbedding`
            settings (official: ``base=100``, ``normalize_coords='separate'``; coordinate
            augmentations off unless set, e.g. pretraining's ``rescale_coords=2``).
        mask_k_bias (bool): Keep the key third of the qkv bias at zero, as the official
            models do (a file's ``bias_mask`` is applied when it is loaded).
        **kwargs: See :class:`DINOViTBase`. For SwiGLU, LoRA target ``'fc1'`` adapts
            ``w1`` and ``w2`` (one adapter each), ``'fc2'`` ``w3``.
    """

    family = 'DINOv3'
    arch_zoo = {
        'small': dict(embed_dims=384, num_layers=12, num_heads=6),
        'small_plus': dict(embed_dims=384, num_layers=12, num_heads=6, ffn_type='swiglu',
                           mlp_ratio=6.0),
        'base': dict(embed_dims=768, num_layers=12, num_heads=12),
        'large': dict(embed_dims=1024, num_layers=24, num_heads=16),
        'huge_plus': dict(embed_dims=1280, num_layers=32, num_heads=20, ffn_type='swiglu',
                          mlp_ratio=6.0),
        '7b': dict(embed_dims=4096, num_layers=40, num_heads=32, ffn_type='swiglu',
                   mlp_ratio=3.0, swiglu_align=64, qkv_bias=False, local_cls_norm=True),
    }
    ffn_layers = {'mlp': Mlp, 'swiglu': SwiGLUFFN}
    norm_eps = 1e-5
    default_rope_cfg = dict(base=100.0, normalize_coords='separate')

    def __init__(self,
                 arch: Union[str, Dict] = 'large',
                 num_storage_tokens: int = 4,
                 patch_size: int = 16,
                 rope_cfg: Optional[Dict] = None,
                 mask_k_bias: bool = True,
                 **kwargs):
        self.num_storage_tokens = self._token_count('num_storage_tokens', num_storage_tokens)
        self.rope_cfg = dict(self.default_rope_cfg, **(rope_cfg or {}))
        self.mask_k_bias = mask_k_bias
        super().__init__(arch, patch_size, **kwargs)
        if mask_k_bias and not self.frozen:
            for block in self.blocks:
                if block.attn.qkv.bias is not None:
                    block.attn.qkv.bias.register_hook(partial(_zero_key_rows, self.embed_dims))

    def _build_tokens(self) -> None:
        C = self.embed_dims
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        if self.num_storage_tokens:
            self.storage_tokens = nn.Parameter(torch.zeros(1, self.num_storage_tokens, C))
        self.rope_embed = RopePositionEmbedding(C, self.num_heads, **self.rope_cfg)
        self.has_local_cls_norm = self.arch_settings.get('local_cls_norm', False)

    def _init_tokens(self) -> None:
        nn.init.normal_(self.cls_token, std=0.02)
        if self.num_storage_tokens:
            nn.init.normal_(self.storage_tokens, std=0.02)

    def _ffn(self, arch: Dict):
        ffn = super()._ffn(arch)
        return partial(ffn, align=arch['swiglu_align']) if 'swiglu_align' in arch else ffn

    def _describe(self) -> str:
        return (f'{super()._describe()}, ffn_type={self.ffn_type!r}, '
                f'num_storage_tokens={self.num_storage_tokens}')

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_storage_tokens

    @staticmethod
    def official_filename(arch: str, weights: str = 'lvd1689m') -> str:
        """The official checkpoint of ``arch`` pretrained on ``weights`` (``'lvd1689m'``,
        or ``'sat493m'`` for large and 7b)."""
        if (arch, weights) not in OFFICIAL_FILES:
            raise ValueError(f'No official DINOv3 {arch!r} checkpoint pretrained on '
                             f'{weights!r}; there are {sorted(OFFICIAL_FILES)}')
        return OFFICIAL_FILES[arch, weights]

    def _from_official(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Training-only tensors dropped, each ``bias_mask`` multiplied into its bias, RoPE
        periods from ``base`` if the file has none."""
        local_cls_norm = [k for k in state if k.startswith('local_cls_norm.')]
        self.has_local_cls_norm = self.has_local_cls_norm or bool(local_cls_norm)
        for key in local_cls_norm + ['mask_token']:
            state.pop(key, None)
        C = self.embed_dims
        for bias_key in [k for k in state if k.endswith('attn.qkv.bias')]:
            mask = state.pop(f'{bias_key}_mask', None)
            if mask is not None:
                state[bias_key] = state[bias_key] * mask.to(state[bias_key].dtype)
            elif self.mask_k_bias:
                state[bias_key] = _zero_key_rows(C, state[bias_key])
        state.setdefault('rope_embed.periods', self.rope_embed.default_periods())
        return state

    def _to_official(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Ours plus the official training-only tensors: a zero ``mask_token``, a default
        ``local_cls_norm`` where the official model has one, every ``bias_mask``."""
        C, dtype = self.embed_dims, self.cls_token.dtype
        state = dict(state, mask_token=torch.zeros(1, C, dtype=dtype))
        if self.has_local_cls_norm:
            state['local_cls_norm.weight'] = torch.ones(C, dtype=dtype)
            state['local_cls_norm.bias'] = torch.zeros(C, dtype=dtype)
        mask = _zero_key_rows(C, torch.ones(3 * C, dtype=dtype))
        for index, block in enumerate(self.blocks):
            if self.mask_k_bias and block.attn.qkv.bias is not None:
                state[f'blocks.{index}.attn.qkv.bias_mask'] = mask.clone()
        return state

    def _rope(self, h: int, w: int) -> Rope:
        return self.rope_embed(h, w)

    def _prepare_tokens(self, patches: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``[class, storage, patches]``; positions enter in the attention (RoPE)."""
        B = patches.shape[0]
        prefix = [self.cls_token] + ([self.storage_tokens] if self.num_storage_tokens else [])
        return torch.cat([t.expand(B, -1, -1) for t in prefix] + [patches], dim=1)
