from .vit_fpn import ViTFPN

__all__ = ['ViTFPN']
