"""DINOv2 and DINOv3 backbones with LoRA for MMSegmentation 1.x; importing this registers
its components."""
from . import datasets, deployment, engine, models  # noqa: F401

__version__ = '0.1.0'
