from .dinov2 import DINOv2
from .dinov3 import DINOv3
from .lora_backbone import LoRABackbone

__all__ = ['DINOv2', 'DINOv3', 'LoRABackbone']
