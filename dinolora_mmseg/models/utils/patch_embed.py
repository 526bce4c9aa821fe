"""Patch embedding of the DINO vision transformers."""
import torch
from torch import nn


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
