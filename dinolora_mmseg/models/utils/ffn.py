"""Feed-forward networks of the DINO ViTs; ``first_layers`` and ``last_layer`` name the
layers LoRA's ``'fc1'`` and ``'fc2'`` targets adapt."""
import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_dims(hidden_dims: int, align: int = 8) -> int:
    """Two thirds of ``hidden_dims`` (``embed_dims * mlp_ratio``) rounded up to a
    multiple of ``align``, as the official SwiGLUs."""
    hidden = int(hidden_dims * 2 / 3)
    return hidden + (-hidden % align)


class Mlp(nn.Module):
    """Two linear layers with GELU between them.

    Args:
        embed_dims (int): Token width.
        hidden_dims (int): Width of the hidden layer.
    """
    first_layers = ('fc1', )
    last_layer = 'fc2'

    def __init__(self, embed_dims: int, hidden_dims: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FusedSwiGLUFFN(nn.Module):
    """SwiGLU with the gate and value projections in one layer ``w12`` (DINOv2 ViT-g/14).

    Args:
        embed_dims (int): Token width.
        hidden_dims (int): Nominal hidden width, see :func:`swiglu_hidden_dims`.
    """
    first_layers = ('w12', )
    last_layer = 'w3'

    def __init__(self, embed_dims: int, hidden_dims: int):
        super().__init__()
        hidden_dims = swiglu_hidden_dims(hidden_dims)
        self.w12 = nn.Linear(embed_dims, 2 * hidden_dims)
        self.w3 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class SwiGLUFFN(nn.Module):
    """SwiGLU with separate gate ``w1`` and value ``w2`` projections (DINOv3 S+, H+, 7B).

    Args:
        embed_dims (int): Token width.
        hidden_dims (int): Nominal hidden width, see :func:`swiglu_hidden_dims`.
        align (int): Multiple the hidden width is rounded up to.
    """
    first_layers = ('w1', 'w2')
    last_layer = 'w3'

    def __init__(self, embed_dims: int, hidden_dims: int, align: int = 8):
        super().__init__()
        hidden_dims = swiglu_hidden_dims(hidden_dims, align)
        self.w1 = nn.Linear(embed_dims, hidden_dims)
        self.w2 = nn.Linear(embed_dims, hidden_dims)
        self.w3 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))
