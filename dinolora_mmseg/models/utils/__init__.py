from .attention import Attention, linear_after_norm
from .block import Block, LayerScale
from .ffn import FusedSwiGLUFFN, Mlp, SwiGLUFFN, swiglu_hidden_dims
from .patch_embed import PatchEmbed
from .rope import Rope, RopePositionEmbedding, apply_rope

__all__ = [
    'Attention', 'Block', 'FusedSwiGLUFFN', 'LayerScale', 'Mlp', 'PatchEmbed', 'Rope',
    'RopePositionEmbedding', 'SwiGLUFFN', 'apply_rope', 'linear_after_norm', 'swiglu_hidden_dims'
]
