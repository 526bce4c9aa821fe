"""The layer norm that lets an adapter after it keep one activation instead of two
(:meth:`~dinolora_mmseg.models.lora.LoRALinear.forward_after_norm`)."""
from typing import Tuple

import torch


class LayerNormKeepingNormalized(torch.autograd.Function):
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
