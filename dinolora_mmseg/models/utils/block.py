"""Transformer block of the DINO vision transformers.

Parameter names follow the official releases (``norm1``, ``ls1.gamma``, ``mlp.fc1`` ...),
so their checkpoints load without renaming.
"""
from typing import Callable, Optional

import torch
from mmcv.cnn.bricks.drop import DropPath
from torch import nn

from .attention import Attention
from .rope import Rope


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch.

    Args:
        embed_dims (int): Token width.
        init_value (float): Initial scale.
    """

    def __init__(self, embed_dims: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((embed_dims, ), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with layer scale and stochastic depth.

    Args:
        embed_dims (int): Token width.
        num_heads (int): Attention heads.
        ffn (Callable[[int, int], nn.Module]): Makes the feed-forward network from
            ``(embed_dims, hidden_dims)``, e.g. :class:`~.ffn.Mlp`.
        hidden_dims (int): Nominal hidden width of the feed-forward network.
        drop_path_rate (float): Stochastic depth rate of both residual branches.
        norm_eps (float): Epsilon of both layer norms.
        qkv_bias (bool): Whether the attention's qkv projection has a bias.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 ffn: Callable[[int, int], nn.Module],
                 hidden_dims: int,
                 drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6,
                 qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = Attention(embed_dims, num_heads, qkv_bias)
        self.ls1 = LayerScale(embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = ffn(embed_dims, hidden_dims)
        self.ls2 = LayerScale(embed_dims)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, rope: Optional[Rope] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), rope, attn_mask)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
