"""A layer norm whose output lets the adapters reading it keep one activation instead of
two for backward.

Training ``lora(norm(x))`` keeps the norm's input (or its normalised ``x_hat``) and the
adapter's input ``norm(x)``. :class:`LayerNormSharingNormalized` attaches ``x_hat`` and
its affine parameters to its output (the attribute :data:`NORMALIZED`); a
:class:`~dinolora_mmseg.models.lora.LoRALinear` given that very tensor computes its
``A norm(x)`` as ``(A * w) x_hat + A b``, so the norm and the adapter keep the same
``x_hat``. Any other consumer sees a plain layer norm output.
"""
from typing import Iterable, Tuple

import torch
from torch import nn

# Attribute of the output tensor: (x_hat, weight, bias) of the norm that made it.
NORMALIZED = 'lora_normalized_input'


class _LayerNormKeepingNormalized(torch.autograd.Function):
    """Layer norm ``x_hat * weight + bias`` over the last dimension that also returns
    the normalised ``x_hat`` and keeps only ``x_hat`` (and ``1 / std``) for backward.

    Both outputs reach ``x`` through ``x_hat``, whose input gradient is ``1 / std``
    times that of normalising ``x_hat`` itself (mean 0, ``1 / std`` of 1).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
        # A unit weight and zero bias take the CPU kernel's fast path (faster than
        # none; measured in docs/performance.md).
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
    """``nn.LayerNorm`` (over the last dimension, with affine parameters) whose output,
    while autograd records, carries its normalised input for the adapters reading it;
    otherwise it is ``nn.LayerNorm``'s forward. Same parameters and state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(x)
        y, x_hat = _LayerNormKeepingNormalized.apply(x, self.weight, self.bias, self.eps)
        setattr(y, NORMALIZED, (x_hat, self.weight, self.bias))
        return y


def share_normalized_input(model: nn.Module, names: Iterable[str]) -> None:
    """Make the named ``nn.LayerNorm`` submodules of ``model``
    :class:`LayerNormSharingNormalized`, keeping their parameters.

    Args:
        model (nn.Module): Changed in place.
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
