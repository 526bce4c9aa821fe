from .backbones import *  # noqa: F401,F403
from .builder import build_model, load_model_checkpoint
from .decode_heads import *  # noqa: F401,F403
from .lora import LoRALinear, add_lora, fold_lora
from .necks import *  # noqa: F401,F403
from .segmentors import *  # noqa: F401,F403

__all__ = ['LoRALinear', 'add_lora', 'build_model', 'fold_lora', 'load_model_checkpoint']
