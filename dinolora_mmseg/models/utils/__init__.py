from .attention import Attention
from .block import Block, LayerScale
from .checkpoint_attention import checkpoint_keeping_attention
from .ffn import FusedSwiGLUFFN, Mlp, SwiGLUFFN, swiglu_hidden_dims
from .patch_embed import PatchEmbed
from .rope import Rope, RopePositionEmbedding, apply_rope
from .spatial_prior import SpatialPrior

__all__ = [
    'Attention', 'Block', 'FusedSwiGLUFFN', 'LayerScale', 'Mlp', 'PatchEmbed', 'Rope',
    'RopePositionEmbedding', 'SpatialPrior', 'SwiGLUFFN', 'apply_rope',
    'checkpoint_keeping_attention', 'swiglu_hidden_dims'
]
