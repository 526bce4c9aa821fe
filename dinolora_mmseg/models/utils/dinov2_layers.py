"""Building blocks of the DINOv2 vision transformer.

Parameter names follow the official release (``attn.qkv``, ``ls1.gamma``, ``mlp.fc1``,
``mlp.w12`` ...), so official checkpoints load without renaming.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.drop import DropPath
from torch import nn

from ..lora import LoRALinear


def linear_after_norm(linear: nn.Linear, x: torch.Tensor,
                      norm: Optional[nn.LayerNorm]) -> torch.Tensor:
    """``linear(norm(x))``, through :meth:`LoRALinear.forward_after_norm` for adapted
    layers (which then keep one activation less for backward).

    Args:
        linear (nn.Linear): The projection, plain or :class:`LoRALinear`.
        x (torch.Tensor): Tokens ``(..., in_features)``.
        norm (nn.LayerNorm, optional): Applied to ``x`` first; ``None`` for none.
    """
    if norm is None:
        return linear(x)
    if isinstance(linear, LoRALinear) and isinstance(norm, nn.LayerNorm):
        return linear.forward_after_norm(x, norm)
    return linear(norm(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches projected to tokens by a strided convolution.

    Args:
        patch_size (int): Side of a square patch in pixels.
        in_channels (int): Image channels.
        embed_dims (int): Token width.
    """

    def __init__(self, patch_size: int, in_channels: int, embed_dims: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    ``forward(x, norm)`` normalises ``x`` by ``norm`` first (see :func:`linear_after_norm`).

    Args:
        embed_dims (int): Token width.
        num_heads (int): Number of heads; ``embed_dims`` must divide evenly.
    """

    def __init__(self, embed_dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(embed_dims, embed_dims * 3)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x: torch.Tensor, norm: Optional[nn.LayerNorm] = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = linear_after_norm(self.qkv, x, norm).reshape(B, N, 3, self.num_heads,
                                                             C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


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


class Mlp(nn.Module):
    """Two linear layers with GELU between them (ViT-S/B/L); ``forward(x, norm)``
    normalises ``x`` by ``norm`` first.

    Args:
        embed_dims (int): Token width.
        hidden_dims (int): Width of the hidden layer.
    """

    def __init__(self, embed_dims: int, hidden_dims: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: torch.Tensor, norm: Optional[nn.LayerNorm] = None) -> torch.Tensor:
        return self.fc2(self.act(linear_after_norm(self.fc1, x, norm)))


class SwiGLUFFN(nn.Module):
    """Fused SwiGLU feed-forward network of ViT-g/14; ``forward(x, norm)`` normalises
    ``x`` by ``norm`` first.

    The hidden width is rounded as in the official ``SwiGLUFFNFused``:
    ``(int(hidden_dims * 2 / 3) + 7) // 8 * 8`` (4096 for ViT-g).

    Args:
        embed_dims (int): Token width.
        hidden_dims (int): Nominal hidden width before rounding.
    """

    def __init__(self, embed_dims: int, hidden_dims: int):
        super().__init__()
        hidden_dims = (int(hidden_dims * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(embed_dims, 2 * hidden_dims)
        self.w3 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: torch.Tensor, norm: Optional[nn.LayerNorm] = None) -> torch.Tensor:
        x1, x2 = linear_after_norm(self.w12, x, norm).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Block(nn.Module):
    """Pre-norm transformer block with layer scale and stochastic depth.

    Args:
        embed_dims (int): Token width.
        num_heads (int): Attention heads.
        ffn_type (str): ``'mlp'`` or ``'swiglu'``.
        mlp_ratio (float): Hidden width of the FFN relative to ``embed_dims``.
        drop_path_rate (float): Stochastic depth rate of both residual branches.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 ffn_type: str = 'mlp',
                 mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        ffn = {'mlp': Mlp, 'swiglu': SwiGLUFFN}[ffn_type]
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = Attention(embed_dims, num_heads)
        self.ls1 = LayerScale(embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.mlp = ffn(embed_dims, int(embed_dims * mlp_ratio))
        self.ls2 = LayerScale(embed_dims)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(x, self.norm1)))
        return x + self.drop_path(self.ls2(self.mlp(x, self.norm2)))
