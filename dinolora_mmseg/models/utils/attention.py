"""Self-attention of the DINO vision transformers (DINOv3's with rotary positions).

Parameter names follow the official releases (``attn.qkv``, ``attn.proj``), so their
checkpoints load without renaming.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .rope import Rope, apply_rope


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    ``forward(x, rope, attn_mask)``, given ``rope``, rotates the queries and keys of the
    patch tokens (the last ``h * w`` tokens) by their positions; a boolean ``attn_mask``
    (broadcast to ``(B, num_heads, N, N)``, True = attend) restricts what each token sees.

    Args:
        embed_dims (int): Token width.
        num_heads (int): Number of heads; ``embed_dims`` must divide evenly.
        qkv_bias (bool): Whether the fused query/key/value projection has a bias.
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def heads(self, x: torch.Tensor,
              rope: Optional[Rope] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, ``(B, num_heads, N, head_dims)`` each, with RoPE.

        Args:
            x (torch.Tensor): Tokens ``(B, N, C)``.
            rope (Rope, optional): ``(sin, cos)`` for the patch tokens.
        """
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return q, k, v

    def forward(self, x: torch.Tensor, rope: Optional[Rope] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, N, C = x.shape
        x = F.scaled_dot_product_attention(*self.heads(x, rope), attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))
