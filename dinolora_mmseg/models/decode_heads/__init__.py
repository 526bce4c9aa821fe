from .eomt_head import EoMTHead
from .float32_deform_attn_mask2former_head import Float32DeformAttnMask2FormerHead
from .linear_head import LinearHead

__all__ = ['EoMTHead', 'Float32DeformAttnMask2FormerHead', 'LinearHead']
