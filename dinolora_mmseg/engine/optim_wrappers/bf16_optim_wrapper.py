from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS
from torch import nn


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` whose forward passes run under bfloat16 autocast.

    MMEngine's ``AmpOptimWrapper`` refuses to run without a GPU; bfloat16 needs none of
    its loss scaling (it has float32's exponent range), so this wrapper only adds
    ``torch.autocast`` on the model's device. ``tools/train.py --amp`` uses it on CPUs;
    weights, gradients and optimizer state stay float32.
    """

    @contextmanager
    def optim_context(self, model: nn.Module):
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device, dtype=torch.bfloat16):
            yield
