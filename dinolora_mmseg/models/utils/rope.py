"""DINOv3's axial rotary position embedding (RoPE): "rotate half", angles
``2 * pi * coord / period`` of patch centres in [-1, 1], rows then columns."""
import math
from typing import Optional, Tuple

import torch
from torch import nn

Rope = Tuple[torch.Tensor, torch.Tensor]  # (sin, cos), each (h * w, head_dims)


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate the last ``h * w`` tokens of ``x`` (the patches) in float32; the prefix
    tokens stay as they are.

    Args:
        x (torch.Tensor): Queries or keys, ``(B, heads, N, head_dims)``.
        rope (Rope): ``(sin, cos)`` from :class:`RopePositionEmbedding`.
    """
    sin, cos = rope
    num_prefix = x.shape[-2] - sin.shape[0]
    patches = x[..., num_prefix:, :].to(sin.dtype)
    first, second = patches.chunk(2, dim=-1)
    rotated = patches * cos + torch.cat([-second, first], dim=-1) * sin
    return torch.cat([x[..., :num_prefix, :], rotated.to(x.dtype)], dim=-2)


class RopePositionEmbedding(nn.Module):
    """sin/cos of the rotation angles for an ``h`` x ``w`` patch grid, in float32.

    The periods are a persistent buffer, as in the official checkpoints (which hold them
    rounded to bfloat16), so a loaded model uses the file's periods.

    Args:
        embed_dims (int): Token width; ``4 * num_heads`` must divide it.
        num_heads (int): Attention heads.
        base (float, optional): Periods ``base ** (4 i / head_dims)``; None: geometric
            from ``min_period`` to ``max_period``.
        min_period (float, optional): Shortest period (with ``base=None``).
        max_period (float, optional): Longest period (with ``base=None``).
        normalize_coords (str): ``'separate'`` divides rows by ``h`` and columns by
            ``w``; ``'min'``/``'max'`` divide both by the shorter/longer side.
        shift_coords (float, optional): Training: shift each axis by U(-shift, shift).
        jitter_coords (float, optional): Training: scale each axis log-uniformly in
            ``[1 / jitter, jitter]``.
        rescale_coords (float, optional): Training: scale both axes log-uniformly in
            ``[1 / rescale, rescale]``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 base: Optional[float] = 100.0,
                 min_period: Optional[float] = None,
                 max_period: Optional[float] = None,
                 normalize_coords: str = 'separate',
                 shift_coords: Optional[float] = None,
                 jitter_coords: Optional[float] = None,
                 rescale_coords: Optional[float] = None):
        super().__init__()
        if embed_dims % (4 * num_heads):
            raise ValueError(f'RoPE needs head widths divisible by 4: embed_dims={embed_dims} '
                             f'is not a multiple of 4 * num_heads = {4 * num_heads}')
        if (base is None) == (min_period is None or max_period is None):
            raise ValueError('RoPE takes either base or both min_period and max_period, got '
                             f'base={base}, min_period={min_period}, max_period={max_period}')
        if normalize_coords not in ('separate', 'min', 'max'):
            raise ValueError(f"normalize_coords must be 'separate', 'min' or 'max', got "
                             f'{normalize_coords!r}')
        self.head_dims = embed_dims // num_heads
        self.base, self.min_period, self.max_period = base, min_period, max_period
        self.normalize_coords = normalize_coords
        self.shift_coords, self.jitter_coords = shift_coords, jitter_coords
        self.rescale_coords = rescale_coords
        self.register_buffer('periods', self.default_periods())
        self._cache_key: Optional[tuple] = None
        self._cache: Optional[Rope] = None

    def default_periods(self) -> torch.Tensor:
        """The periods for ``base`` (or ``min_period``/``max_period``), in float32."""
        quarter = self.head_dims // 4
        if self.base is not None:
            exponents = torch.arange(quarter, dtype=torch.float32) * 2 / (self.head_dims // 2)
            return self.base**exponents
        ratio = self.max_period / self.min_period
        return ratio**torch.linspace(0, 1, quarter, dtype=torch.float32) / ratio * self.max_period

    def _coords(self, h: int, w: int) -> torch.Tensor:
        """Patch centres ``(h * w, 2)`` (row, column) in [-1, 1], augmented in training."""
        dd = dict(device=self.periods.device, dtype=torch.float32)
        side = {'separate': None, 'max': max(h, w), 'min': min(h, w)}[self.normalize_coords]
        rows = torch.arange(0.5, h, **dd) / (side or h)
        cols = torch.arange(0.5, w, **dd) / (side or w)
        coords = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        if self.training and self.shift_coords is not None:
            coords = coords + torch.empty(2, **dd).uniform_(-self.shift_coords, self.shift_coords)
        if self.training and self.jitter_coords is not None:
            log_jitter = math.log(self.jitter_coords)
            coords = coords * torch.empty(2, **dd).uniform_(-log_jitter, log_jitter).exp()
        if self.training and self.rescale_coords is not None:
            log_rescale = math.log(self.rescale_coords)
            coords = coords * torch.empty(1, **dd).uniform_(-log_rescale, log_rescale).exp()
        return coords

    def _tables(self, h: int, w: int) -> Rope:
        coords = self._coords(h, w)
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        return torch.sin(angles), torch.cos(angles)

    def forward(self, h: int, w: int) -> Rope:
        """The last grid's tables are reused while grid and periods stay the same (not
        while augmenting, nor under ``torch.compile``/``torch.export``)."""
        augmenting = self.training and any(
            v is not None for v in (self.shift_coords, self.jitter_coords, self.rescale_coords))
        if augmenting or torch.compiler.is_compiling() or torch.jit.is_tracing():
            return self._tables(h, w)
        periods = self.periods
        key = (h, w, periods.device, periods.data_ptr(), periods._version)
        if self._cache_key != key:
            # Plain tensors even under inference mode, so that training may reuse them.
            with torch.inference_mode(False), torch.no_grad():
                self._cache = self._tables(h, w)
            self._cache_key = key
        return self._cache
