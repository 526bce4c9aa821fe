"""Activation checkpointing that keeps attention outputs and recomputes the rest."""
from functools import partial
from typing import Callable

import torch
from torch.utils.checkpoint import (CheckpointPolicy, checkpoint,
                                    create_selective_checkpoint_contexts)

# Kept attention kernels: the costliest part of a block to recompute, a small output.
ATTENTION_OPS = frozenset(
    getattr(torch.ops.aten, name).default for name in (
        '_scaled_dot_product_flash_attention_for_cpu', '_scaled_dot_product_flash_attention',
        '_scaled_dot_product_efficient_attention', '_scaled_dot_product_cudnn_attention')
    if hasattr(torch.ops.aten, name))


def _keep_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return (CheckpointPolicy.MUST_SAVE if op in ATTENTION_OPS
            else CheckpointPolicy.PREFER_RECOMPUTE)


def checkpoint_keeping_attention(function: Callable, *args):
    """``function(*args)`` (a block, say) under activation checkpointing that keeps
    its inputs and attention outputs and recomputes the rest."""
    return checkpoint(function, *args, use_reentrant=False,
                      context_fn=partial(create_selective_checkpoint_contexts, _keep_attention))
