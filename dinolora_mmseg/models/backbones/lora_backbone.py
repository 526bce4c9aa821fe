import re
from typing import Dict, Optional

from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import nn

from ..lora import add_lora, train_adapters_only


@MODELS.register_module()
class LoRABackbone(BaseModule):
    """Any backbone of the registries, frozen, with LoRA adapters on its linear layers.

    E.g. MMSeg's ``VisionTransformer`` (targets ``'ffn.layers.0.0'``, ``'ffn.layers.1'``)
    or ``type='mmpretrain.VisionTransformer'`` (``'attn.qkv'``); pretrained weights load
    through the wrapped backbone's ``init_cfg``, under unchanged key names.

    Args:
        backbone (dict): Config of the wrapped backbone.
        lora (dict): ``rank``, ``alpha``, ``dropout`` and ``targets``: each target is
            a module name suffix (``'attn.qkv'`` matches ``'layers.3.attn.qkv'``) or a
            regular expression that matches whole module names.
        frozen (bool): The wrapped backbone's weights do not train and stay in eval mode.
        init_cfg (dict, optional): MMEngine initialisation config.
    """

    def __init__(self, backbone: Dict, lora: Dict, frozen: bool = True,
                 init_cfg: Optional[Dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.frozen = frozen
        if frozen:
            self.backbone.requires_grad_(False)
        lora = dict(lora)
        targets = lora.pop('targets')
        linears = [name for name, m in self.backbone.named_modules() if isinstance(m, nn.Linear)]
        # torch's MultiheadAttention applies out_proj.weight itself, never out_proj(x).
        bypassed = {f'{name}.out_proj' if name else 'out_proj'
                    for name, m in self.backbone.named_modules()
                    if isinstance(m, nn.MultiheadAttention)}
        parts_by_module = {}
        for target in [targets] if isinstance(targets, str) else targets:
            matched = [name for name in linears
                       if name == target or name.endswith('.' + target)
                       or re.fullmatch(target, name)]
            if not matched:
                raise ValueError(f'LoRA target {target!r} matches no nn.Linear of '
                                 f'{backbone["type"]}; its linear layers are e.g. '
                                 f'{linears[:8]}')
            for name in matched:
                if name in bypassed:
                    raise ValueError(f'LoRA target {target!r} matches {name!r}, the output '
                                     'projection of a torch nn.MultiheadAttention, which uses '
                                     'its weight directly; an adapter there would do nothing')
                out_features = self.backbone.get_submodule(name).out_features
                parts_by_module[name] = {'all': (0, out_features)}
        add_lora(self.backbone, parts_by_module, **lora)

    def forward(self, x):
        return self.backbone(x)

    def train(self, mode: bool = True) -> 'LoRABackbone':
        """Keep a frozen backbone in eval mode; LoRA dropout follows ``mode``."""
        return train_adapters_only(self, mode) if self.frozen else super().train(mode)
