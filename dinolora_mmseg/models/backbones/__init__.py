from .dinov2 import DINOv2
from .lora_backbone import LoRABackbone

__all__ = ['DINOv2', 'LoRABackbone']
