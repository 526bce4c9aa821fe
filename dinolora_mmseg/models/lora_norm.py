"""A layer norm sharing its normalised input ``x_hat`` with the adapters reading its output,
so that both keep one activation for backward (docs/performance.md, "Adapters reading the
norm's normalised input")."""
from typing import Iterable, Tuple

import torch
from torch import nn

# Attribute of the output tensor: (x_hat, weight, bias) of the norm that made it.
NORMALIZED = 'lora_normalized_input'


class _LayerNormKeepingNormalized(torch.autograd.Function):
    """Layer norm ``x_hat * weight + bias`` that also returns ``x_hat`` and keeps only
    ``x_hat`` and ``1 / std`` for backward: the input gradient through ``x_hat`` is
    ``1 / std`` times that of normalising ``x_hat`` itself (mean 0, std 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
        # A unit weight and zero bias take the CPU kernel's fast path (docs/performance.md).
        ones = x.new_ones(x.shape[-1])
        x_hat, _, rstd = torch.native_layer_norm(x, x.shape[-1:], ones,
                                                 torch.zeros_like(ones), eps)
        ctx.save_for_backward(x_hat, rstd, weight)
        return torch.addcmul(bias, x_hat, weight), x_hat

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, grad_x_hat: torch.Tensor):
        x_hat, rstd, weight = ctx.saved_tensors
        grad = torch.addcmul(grad_x_hat, grad_out, weight)
        grad_x = torch.ops.aten.native_layer_norm_backward(
            grad, x_hat, x_hat.shape[-1:], torch.zeros_like(rstd), torch.ones_like(rstd),
            None, None, [True, False, False])[0].mul_(rstd)
        dims = tuple(range(grad_out.dim() - 1))
        grad_weight = (grad_out * x_hat).sum(dims) if ctx.needs_input_grad[1] else None
        grad_bias = grad_out.sum(dims) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None


class LayerNormSharingNormalized(nn.LayerNorm):
    """``nn.LayerNorm`` whose output, while autograd records, carries ``(x_hat, weight,
    bias)`` as the attribute :data:`NORMALIZED` for a ``LoRALinear`` reading it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(x)
        y, x_hat = _LayerNormKeepingNormalized.apply(x, self.weight, self.bias, self.eps)
        setattr(y, NORMALIZED, (x_hat, self.weight, self.bias))
        return y


def share_normalized_input(model: nn.Module, names: Iterable[str]) -> None:
    """Make the named ``nn.LayerNorm`` submodules of ``model`` (in place)
    :class:`LayerNormSharingNormalized`, keeping their parameters.

    Args:
        model (nn.Module): The model.
        names (Iterable[str]): Dotted names of layer norms whose outputs adapters read.
    """
    for name in names:
        norm = model.get_submodule(name)
        if (type(norm) is not nn.LayerNorm or len(norm.normalized_shape) != 1
                or norm.weight is None or norm.bias is None):
            raise ValueError(f'{name} is not an nn.LayerNorm over one dimension with '
                             f'affine parameters (found {norm!r})')
        shared = LayerNormSharingNormalized(norm.normalized_shape, norm.eps, device='meta')
        shared.weight, shared.bias = norm.weight, norm.bias
        model.set_submodule(name, shared)
