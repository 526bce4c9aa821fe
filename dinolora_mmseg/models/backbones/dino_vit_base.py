"""What the DINOv2 and DINOv3 backbones share: blocks, outputs, LoRA, frozen weights."""
import logging
from contextlib import nullcontext
from itertools import chain
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn

from ..lora import add_lora, fold_lora, train_adapters_only
from ..lora_norm import share_normalized_input
from ..utils import Block, PatchEmbed, Rope, SpatialPrior, checkpoint_keeping_attention
from .frozen_pretrained import FrozenPretrained

FROZEN_DTYPES = {'float32': None, 'bfloat16': torch.bfloat16}


class DINOViTBase(BaseModule):
    """A DINO vision transformer: patch tokens after prefix tokens, pre-norm blocks, LoRA.

    Subclasses add the prefix tokens and positions (``_build_tokens``, ``_init_tokens``,
    ``_prepare_tokens``, ``_rope``) and the official key layout (``_from_official``,
    ``_to_official``); the pretrained weights are :attr:`frozen_weights`.

    Args:
        arch (str | dict): A name of ``arch_zoo`` or a dict with ``embed_dims``,
            ``num_layers``, ``num_heads`` and optionally ``ffn_type`` and ``mlp_ratio``.
        patch_size (int): Patch side in pixels.
        in_channels (int): Image channels.
        out_indices (int | Sequence[int]): Blocks whose outputs are returned.
        final_norm (bool): Apply the final LayerNorm to every output.
        drop_path_rate (float): Stochastic depth, rising linearly to this rate.
        pretrained (str, optional): Local ``.pth``/``.pt``/``.safetensors`` file or
            ``http(s)`` URL in the official layout; None leaves random weights.
        verify_pretrained (bool): Refuse checkpoints whose adapters were trained on
            other pretrained weights (as their ``meta`` records them).
        frozen (bool): Pretrained weights do not train and stay in eval mode.
        frozen_dtype (str): ``'float32'`` or ``'bfloat16'`` (needs ``frozen``): frozen
            weights in bfloat16 under bfloat16 autocast; adapters and outputs float32.
        lora (dict, optional): ``rank``, ``alpha``, ``dropout``, ``targets`` (of
            :attr:`lora_target_names`) and ``layers`` (block indices, default every block
            up to the last of ``out_indices``; later ones are refused: they do not run).
        with_cp (bool): Activation checkpointing while training, keeping attention
            outputs (:func:`checkpoint_keeping_attention`).
        spatial_prior (dict, optional): Arguments of a trainable :class:`SpatialPrior`
            whose maps follow the ViT outputs (for ``ViTFPN(prior_channels=...)``).
        init_cfg (dict, optional): MMEngine initialisation config.
    """

    family = 'DINO'
    arch_zoo: Dict[str, Dict] = {}
    ffn_layers: Dict[str, Callable[[int, int], nn.Module]] = {}
    norm_eps = 1e-6
    lora_target_names = ('q', 'k', 'v', 'qkv', 'proj', 'fc1', 'fc2')

    def __init__(self,
                 arch: Union[str, Dict],
                 patch_size: int,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 final_norm: bool = True,
                 drop_path_rate: float = 0.0,
                 pretrained: Optional[str] = None,
                 verify_pretrained: bool = True,
                 frozen: bool = True,
                 frozen_dtype: str = 'float32',
                 lora: Optional[Dict] = None,
                 with_cp: bool = False,
                 spatial_prior: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = arch = self._arch_settings(arch)
        if frozen_dtype not in FROZEN_DTYPES or (frozen_dtype != 'float32' and not frozen):
            raise ValueError(f'frozen_dtype must be one of {list(FROZEN_DTYPES)} (and float32 '
                             f'unless frozen=True), got {frozen_dtype!r}, frozen={frozen}')
        self.embed_dims = embed_dims = arch['embed_dims']
        self.num_layers = num_layers = arch['num_layers']
        self.num_heads = arch['num_heads']
        self.ffn_type = arch.get('ffn_type', 'mlp')
        self.patch_size = patch_size
        self.final_norm = final_norm
        self.with_cp = with_cp
        self.frozen = frozen
        self.frozen_dtype = FROZEN_DTYPES[frozen_dtype]
        self.out_indices = self._normalise_indices(out_indices, 'out_indices')
        self.frozen_weights = FrozenPretrained(self.family, pretrained, frozen,
                                               self.frozen_dtype, verify_pretrained)
        self._warned_padding = False

        # With a pretrained file, build without memory and let the file's tensors in.
        with torch.device('meta') if pretrained else nullcontext():
            self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dims)
            self._build_tokens()
            ffn = self._ffn(arch)
            hidden_dims = int(embed_dims * arch.get('mlp_ratio', 4.0))
            rates = [drop_path_rate * i / max(num_layers - 1, 1) for i in range(num_layers)]
            self.blocks = nn.ModuleList(
                Block(embed_dims, self.num_heads, ffn, hidden_dims, rate, self.norm_eps,
                      arch.get('qkv_bias', True)) for rate in rates)
            self.norm = nn.LayerNorm(embed_dims, eps=self.norm_eps)
            self._init_random()
        if pretrained:
            self.frozen_weights.load(self, self._from_official, self._describe())
        else:
            self.frozen_weights.keep_random(self)
        self.frozen_weights.freeze(self)
        if lora is not None:
            self._add_lora(**lora)
        self.spatial_prior = (None if spatial_prior is None
                              else SpatialPrior(in_channels, **spatial_prior))
        self.frozen_weights.attach(self)

    @staticmethod
    def _token_count(name: str, value) -> int:
        if not isinstance(value, int) or value < 0:
            raise ValueError(f'{name} must be a non-negative int, got {value!r}')
        return value

    def _arch_settings(self, arch: Union[str, Dict]) -> Dict:
        if isinstance(arch, str):
            if arch not in self.arch_zoo:
                raise ValueError(f'Unknown {self.family} arch {arch!r}; choose one of '
                                 f'{sorted(self.arch_zoo)} or pass a dict')
            return self.arch_zoo[arch]
        required = {'embed_dims', 'num_layers', 'num_heads'}
        if not isinstance(arch, dict) or not required <= set(arch):
            raise ValueError(f'A custom {self.family} arch must be a dict with '
                             f'{sorted(required)}, got {arch!r}')
        if arch.get('ffn_type', 'mlp') not in self.ffn_layers:
            raise ValueError(f'{self.family} arch ffn_type must be one of '
                             f'{sorted(self.ffn_layers)}, got {arch["ffn_type"]!r}')
        return arch

    def _ffn(self, arch: Dict) -> Callable[[int, int], nn.Module]:
        return self.ffn_layers[arch.get('ffn_type', 'mlp')]

    def _describe(self) -> str:
        """The sizes a pretrained file has to fit, for messages."""
        return f'embed_dims={self.embed_dims}, num_layers={self.num_layers}'

    def _normalise_indices(self, indices: Union[int, Sequence[int]], name: str) -> Tuple[int, ...]:
        indices = (indices, ) if isinstance(indices, int) else tuple(indices)
        for index in indices:
            if not -self.num_layers <= index < self.num_layers:
                raise ValueError(f'{name} entry {index} is outside the {self.num_layers} '
                                 f'blocks of this {self.family} (valid: {-self.num_layers}..'
                                 f'{self.num_layers - 1})')
        return tuple(index % self.num_layers for index in indices)

    def _init_random(self) -> None:
        """Random weights for tests and demos; layer scales at 1, so that random blocks
        are not close to the identity."""
        self._init_tokens()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.ones_(block.ls1.gamma)
            nn.init.ones_(block.ls2.gamma)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the class token and the register tokens."""
        raise NotImplementedError

    def _rope(self, h: int, w: int) -> Optional[Rope]:
        """RoPE of an ``h`` x ``w`` grid for every block; None without."""
        return None

    def _add_lora(self, rank: int = 4, alpha: float = 4.0, dropout: float = 0.0,
                  targets: Sequence[str] = ('q', 'v'),
                  layers: Optional[Sequence[int]] = None) -> None:
        unknown = sorted(set(targets) - set(self.lora_target_names))
        if unknown or not targets:
            raise ValueError(f'Unknown LoRA target(s) {unknown or list(targets)}; valid '
                             f'targets are {list(self.lora_target_names)}')
        C, mlp = self.embed_dims, self.blocks[0].mlp
        rows = {'q': [('attn.qkv', (0, C))], 'k': [('attn.qkv', (C, 2 * C))],
                'v': [('attn.qkv', (2 * C, 3 * C))], 'qkv': [('attn.qkv', (0, 3 * C))],
                'proj': [('attn.proj', (0, C))],
                'fc1': [(f'mlp.{name}', (0, getattr(mlp, name).out_features))
                        for name in mlp.first_layers],
                'fc2': [(f'mlp.{mlp.last_layer}', (0, C))]}
        last = max(self.out_indices)
        layers = range(last + 1) if layers is None else self._normalise_indices(
            layers, 'lora layers')
        unused = sorted(index for index in layers if index > last)
        if unused:
            raise ValueError(f'LoRA layers {unused} come after block {last}, the last of '
                             f'out_indices {list(self.out_indices)}: those blocks do not run, '
                             'so their adapters would never train; leave them out of '
                             'lora.layers')
        parts_by_module: Dict[str, Dict] = {}
        for index in layers:
            for target in targets:
                for module, span in rows[target]:
                    parts_by_module.setdefault(f'blocks.{index}.{module}', {})[target] = span
        add_lora(self, parts_by_module, rank=rank, alpha=alpha, dropout=dropout)
        # Adapters right after a norm read its normalised input (lora_norm.py).
        norms = [name for name, targets_after in
                 (('norm1', {'q', 'k', 'v', 'qkv'}), ('norm2', {'fc1'}))
                 if targets_after & set(targets)]
        share_normalized_input(self, [f'blocks.{i}.{norm}' for i in layers for norm in norms])

    @torch.no_grad()
    def official_state_dict(self) -> Dict[str, torch.Tensor]:
        """Every weight under the official key names, LoRA folded in (into a copy), as
        the official code and ``pretrained=`` load a release."""
        folded = fold_lora(self)
        return self._to_official({
            name: tensor.detach() for name, tensor in
            chain(folded.named_parameters(), folded.named_buffers())
            if not name.startswith('spatial_prior.')})

    def train(self, mode: bool = True) -> 'DINOViTBase':
        """Frozen weights stay in eval mode; LoRA dropout and the spatial prior follow."""
        if not self.frozen:
            return super().train(mode)
        train_adapters_only(self, mode)
        if self.spatial_prior is not None:
            self.spatial_prior.train(mode)
        return self

    def _warn_padding(self, height: int, width: int) -> None:
        if self._warned_padding:
            return
        self._warned_padding = True
        p = self.patch_size
        print_log(
            f'{self.family}: a {height}x{width} input is not a multiple of the patch size {p}: '
            f'it is padded to {-(-height // p) * p}x{-(-width // p) * p}, and a segmentor '
            'resizes logits of the padded image onto the unpadded one (stretched predictions). '
            f'Pad in the data preprocessor instead (size_divisor={p}, test_cfg=dict('
            f'size_divisor={p})), which crops the padding off the predictions again',
            logger='current', level=logging.WARNING)

    def _pad(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """``x`` zero-padded at the bottom and right to whole patches, and the patch grid."""
        _, _, H, W = x.shape
        p = self.patch_size
        if H < p or W < p:
            raise ValueError(f'{self.family} input of {H}x{W} pixels is smaller than one '
                             f'{p}x{p} patch')
        h, w = -(-H // p), -(-W // p)
        if (h * p, w * p) != (H, W):
            self._warn_padding(H, W)
            x = F.pad(x, (0, w * p - W, 0, h * p - H))
        return x, h, w

    def autocast(self):
        """The context the blocks compute in: bfloat16 autocast for bfloat16 frozen
        weights, else none."""
        return (torch.autocast(self.patch_embed.proj.weight.device.type,
                               dtype=self.frozen_dtype)
                if self.frozen_dtype is not None else nullcontext())

    def prepare_tokens(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[Rope], int, int]:
        """The first block's input for images ``x`` (run it under :meth:`autocast`).

        Args:
            x (torch.Tensor): Images ``(B, C, H, W)``, padded to whole patches here.

        Returns:
            tuple: Tokens ``(B, num_prefix_tokens + h * w, C)``, the rotary positions of
            the patch tokens for every block (None for DINOv2), and ``h``, ``w``.
        """
        x, h, w = self._pad(x)
        return self._prepare_tokens(self.patch_embed(x), h, w), self._rope(h, w), h, w

    def run_block(self, index: int, x: torch.Tensor, rope: Optional[Rope] = None,
                  attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Block ``index`` on tokens ``x``, with activation checkpointing under
        ``with_cp`` while training.

        Args:
            index (int): Block index.
            x (torch.Tensor): Tokens ``(B, N, C)``.
            rope (Rope, optional): Rotary positions of the last ``h * w`` tokens.
            attn_mask (torch.Tensor, optional): Boolean mask, True = attend, broadcast to
                ``(B, num_heads, N, N)``.
        """
        block = self.blocks[index]
        if self.with_cp and self.training and torch.is_grad_enabled():
            return checkpoint_keeping_attention(block, x, rope, attn_mask)
        return block(x, rope, attn_mask)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        B = x.shape[0]
        x, h, w = self._pad(x)
        image = x
        # bfloat16 frozen weights compute in bfloat16; adapters stay float32 parameters.
        with self.autocast():
            x = self._prepare_tokens(self.patch_embed(x), h, w)
            rope = self._rope(h, w)  # once for all blocks
            features = {}
            # Blocks after the last output are not run.
            for index in range(max(self.out_indices) + 1):
                x = self.run_block(index, x, rope)
                if index in self.out_indices:
                    out = self.norm(x) if self.final_norm else x
                    out = out[:, self.num_prefix_tokens:].transpose(1, 2).reshape(B, -1, h, w)
                    features[index] = out.float() if self.frozen_dtype is not None else out
        outputs = tuple(features[index] for index in self.out_indices)
        if self.spatial_prior is not None:
            outputs += tuple(self.spatial_prior(image))
        return outputs
