from .eomt import EoMT, mask_probability

__all__ = ['EoMT', 'mask_probability']
