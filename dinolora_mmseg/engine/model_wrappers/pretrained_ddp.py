from mmengine.model import MMDistributedDataParallel
from mmseg.registry import MODEL_WRAPPERS
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ...models.backbones.frozen_pretrained import names_of_pretrained_weights


@MODEL_WRAPPERS.register_module()
class PretrainedWeightsDDP(MMDistributedDataParallel):
    """MMEngine's ``MMDistributedDataParallel`` that does not broadcast the frozen
    weights every rank loads from the same pretrained file.

    DDP broadcasts every parameter and buffer from rank 0 when it wraps a model (13.4 GB
    for a bfloat16 DINOv3-7B); the frozen pretrained weights are equal on every rank
    already, and they get no gradients, so they are left out
    (``_ddp_params_and_buffers_to_ignore``). Randomly initialised frozen weights
    (``pretrained=None``) differ by rank and are broadcast as usual, and so is
    everything that trains.

    Args:
        module (nn.Module): The model to wrap.
        **kwargs: Arguments of :class:`MMDistributedDataParallel`
            (``device_ids``, ``find_unused_parameters``, ...).
    """

    def __init__(self, module: nn.Module, **kwargs):
        ignored = set(getattr(module, '_ddp_params_and_buffers_to_ignore', ()))
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            module, sorted(ignored.union(names_of_pretrained_weights(module))))
        super().__init__(module=module, **kwargs)
