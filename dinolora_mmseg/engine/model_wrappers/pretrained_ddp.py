from mmengine.model import MMDistributedDataParallel
from mmseg.registry import MODEL_WRAPPERS
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ...models.backbones.frozen_pretrained import names_of_pretrained_weights


@MODEL_WRAPPERS.register_module()
class PretrainedWeightsDDP(MMDistributedDataParallel):
    """MMEngine's ``MMDistributedDataParallel`` that does not broadcast the frozen
    weights every rank loads from the same pretrained file (13.4 GB for a bfloat16
    DINOv3-7B); random frozen weights and everything that trains are broadcast as usual.

    Args:
        module (nn.Module): The model to wrap.
        **kwargs: Arguments of :class:`MMDistributedDataParallel`.
    """

    def __init__(self, module: nn.Module, **kwargs):
        ignored = set(getattr(module, '_ddp_params_and_buffers_to_ignore', ()))
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            module, sorted(ignored.union(names_of_pretrained_weights(module))))
        super().__init__(module=module, **kwargs)
