from .backbones import *  # noqa: F401,F403
from .lora import LoRALinear, add_lora, merge_lora, unmerge_lora

__all__ = ['LoRALinear', 'add_lora', 'merge_lora', 'unmerge_lora']
