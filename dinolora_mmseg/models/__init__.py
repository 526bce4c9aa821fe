from .backbones import *  # noqa: F401,F403
from .decode_heads import *  # noqa: F401,F403
from .lora import LoRALinear, add_lora, merge_lora, merged_state_dict, unmerge_lora
from .necks import *  # noqa: F401,F403

__all__ = ['LoRALinear', 'add_lora', 'merge_lora', 'merged_state_dict', 'unmerge_lora']
