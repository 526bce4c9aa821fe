import logging
import math
from functools import partial
from itertools import chain
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import nn
from torch.utils.checkpoint import (CheckpointPolicy, checkpoint,
                                    create_selective_checkpoint_contexts)

from ...utils.fingerprint import decode_record, encode_record, tensor_fingerprint
from ...utils.weights import load_weights
from ..lora import (LoRALinear, add_lora, merge_lora, train_adapters_only,
                    unmerge_lora)
from ..utils.dinov2_layers import Block, PatchEmbed

OFFICIAL_URL = 'https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{s}14/dinov2_vit{s}14{reg}_pretrain.pth'

# Attention kernels whose outputs activation checkpointing keeps: attention is the
# costliest part of a block to recompute (most of it at high resolution) and its
# output is one token-width tensor, a small part of what a block holds for backward.
ATTENTION_OPS = frozenset(
    getattr(torch.ops.aten, name).default for name in (
        '_scaled_dot_product_flash_attention_for_cpu', '_scaled_dot_product_flash_attention',
        '_scaled_dot_product_efficient_attention', '_scaled_dot_product_cudnn_attention')
    if hasattr(torch.ops.aten, name))


def _keep_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective checkpointing policy: save attention outputs, recompute the rest."""
    return (CheckpointPolicy.MUST_SAVE if op in ATTENTION_OPS
            else CheckpointPolicy.PREFER_RECOMPUTE)


@MODELS.register_module()
class DINOv2(BaseModule):
    """DINOv2 vision transformer with optional LoRA adapters.

    Reproduces the official DINOv2 models (``dinov2_vit{s,b,l,g}14[_reg4]``) and
    loads their released checkpoints as they are. Outputs are the patch tokens of the
    chosen blocks as ``(B, C, ceil(H/14), ceil(W/14))`` maps, as the official
    ``get_intermediate_layers(..., reshape=True, norm=final_norm)`` returns them.

    Inputs whose sides are not multiples of the patch size are zero-padded at the
    bottom and right (the value of the mean colour after normalisation), never cropped.
    MMSeg's data preprocessor can do this padding instead (``size_divisor=14``), which
    also crops the padded rows off the predictions.

    Args:
        arch (str | dict): ``'small'``, ``'base'``, ``'large'``, ``'giant'`` or a dict
            with ``embed_dims``, ``num_layers``, ``num_heads`` and optionally
            ``ffn_type`` (``'mlp'``/``'swiglu'``) and ``mlp_ratio``.
        num_register_tokens (int): Register tokens after the class token (4 for the
            ``_reg4`` releases).
        img_size (int): Side of the square image the position embedding was trained
            for (518 -> a 37x37 grid).
        patch_size (int): Patch side in pixels.
        in_channels (int): Image channels.
        out_indices (int | Sequence[int]): Blocks whose outputs are returned;
            negative indices count from the end.
        final_norm (bool): Apply the final LayerNorm to every output.
        drop_path_rate (float): Stochastic depth, rising linearly to this rate.
            Inactive while the backbone is frozen.
        interpolate_antialias (bool, optional): Antialiased bicubic resizing of the
            position embedding. Default: as the official model of this variant
            (True with registers, False without).
        interpolate_offset (float, optional): The official ``+0.1`` offset of the
            resize scale factor; ``0`` resizes to the exact grid. Default: as the
            official model (0 with registers, 0.1 without).
        pretrained (str, optional): Local ``.pth``/``.pt``/``.safetensors`` file or
            ``http(s)`` URL of an official-layout checkpoint, loaded at construction.
            None leaves random weights (with a warning).
        verify_pretrained (bool): Refuse to load a checkpoint (``load_from``,
            ``tools/test.py``, ``--resume``) whose adapters were trained on other
            pretrained weights than ``pretrained`` holds: checkpoints leave the frozen
            weights out and record the fingerprint of the ones they were trained on.
        frozen (bool): Pretrained weights get ``requires_grad=False`` and stay in
            eval mode; only LoRA adapters (and downstream heads) train.
        lora (dict, optional): LoRA adapters: ``rank``, ``alpha``, ``dropout``,
            ``targets`` (any of ``'q'``, ``'k'``, ``'v'``, ``'qkv'``, ``'proj'``,
            ``'fc1'``, ``'fc2'``) and ``layers`` (block indices, default every block up
            to the last of ``out_indices``; later blocks do not run, so adapters there
            are refused).
        with_cp (bool): Activation checkpointing while training: each block keeps
            its input and its attention output for the backward pass and recomputes
            the rest (linear layers, norms, activations).
        init_cfg (dict, optional): MMEngine initialisation config.
    """

    arch_zoo = {
        'small': dict(embed_dims=384, num_layers=12, num_heads=6),
        'base': dict(embed_dims=768, num_layers=12, num_heads=12),
        'large': dict(embed_dims=1024, num_layers=24, num_heads=16),
        'giant': dict(embed_dims=1536, num_layers=40, num_heads=24, ffn_type='swiglu'),
    }
    lora_target_names = ('q', 'k', 'v', 'qkv', 'proj', 'fc1', 'fc2')

    def __init__(self,
                 arch: Union[str, Dict] = 'large',
                 num_register_tokens: int = 0,
                 img_size: int = 518,
                 patch_size: int = 14,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 final_norm: bool = True,
                 drop_path_rate: float = 0.0,
                 interpolate_antialias: Optional[bool] = None,
                 interpolate_offset: Optional[float] = None,
                 pretrained: Optional[str] = None,
                 verify_pretrained: bool = True,
                 frozen: bool = True,
                 lora: Optional[Dict] = None,
                 with_cp: bool = False,
                 init_cfg: Optional[Dict] = None):
        super().__init__(init_cfg=init_cfg)
        arch = self._arch_settings(arch)
        if not isinstance(num_register_tokens, int) or num_register_tokens < 0:
            raise ValueError('num_register_tokens must be a non-negative int, '
                             f'got {num_register_tokens!r}')
        self.embed_dims = embed_dims = arch['embed_dims']
        self.num_layers = num_layers = arch['num_layers']
        self.ffn_type = arch.get('ffn_type', 'mlp')
        self.num_register_tokens = num_register_tokens
        self.patch_size = patch_size
        self.final_norm = final_norm
        self.with_cp = with_cp
        self.interpolate_antialias = (num_register_tokens > 0 if interpolate_antialias is None
                                      else interpolate_antialias)
        self.interpolate_offset = ((0.0 if num_register_tokens > 0 else 0.1)
                                   if interpolate_offset is None else interpolate_offset)
        self.out_indices = self._normalise_indices(out_indices, 'out_indices')

        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dims))
        if num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dims))
        rates = [drop_path_rate * i / max(num_layers - 1, 1) for i in range(num_layers)]
        self.blocks = nn.ModuleList(
            Block(embed_dims, arch['num_heads'], self.ffn_type, arch.get('mlp_ratio', 4.0), rate)
            for rate in rates)
        self.norm = nn.LayerNorm(embed_dims, eps=1e-6)
        self._init_random()

        self.pretrained = pretrained
        self.pretrained_fingerprint: Optional[str] = None
        self.verify_pretrained = verify_pretrained
        self._warned_padding = False
        if pretrained:
            self.load_pretrained(pretrained)
        else:
            print_log('DINOv2: no pretrained weights given; the backbone is randomly '
                      'initialised', logger='current', level=logging.WARNING)
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
        self.frozen_keys = frozenset(name for name, p in self.named_parameters()
                                     if not p.requires_grad)
        if lora is not None:
            self._add_lora(**lora)
        self._register_state_dict_hook(self._drop_restorable_weights)
        self._register_load_state_dict_pre_hook(self._check_and_complete, with_module=False)

    def _arch_settings(self, arch: Union[str, Dict]) -> Dict:
        if isinstance(arch, str):
            if arch not in self.arch_zoo:
                raise ValueError(f'Unknown DINOv2 arch {arch!r}; choose one of '
                                 f'{sorted(self.arch_zoo)} or pass a dict')
            return self.arch_zoo[arch]
        required = {'embed_dims', 'num_layers', 'num_heads'}
        if not isinstance(arch, dict) or not required <= set(arch):
            raise ValueError(f'A custom DINOv2 arch must be a dict with {sorted(required)}, '
                             f'got {arch!r}')
        return arch

    def _normalise_indices(self, indices: Union[int, Sequence[int]], name: str) -> Tuple[int, ...]:
        indices = (indices, ) if isinstance(indices, int) else tuple(indices)
        for index in indices:
            if not -self.num_layers <= index < self.num_layers:
                raise ValueError(f'{name} entry {index} is outside the {self.num_layers} '
                                 f'blocks of this DINOv2 (valid: {-self.num_layers}..'
                                 f'{self.num_layers - 1})')
        return tuple(index % self.num_layers for index in indices)

    def _init_random(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.num_register_tokens:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.ones_(block.ls1.gamma)
            nn.init.ones_(block.ls2.gamma)

    @staticmethod
    def official_url(arch: str, num_register_tokens: int = 0) -> str:
        """Download address of the official checkpoint of ``arch`` (S/B/L/g)."""
        reg = {0: '', 4: '_reg4'}[num_register_tokens]
        return OFFICIAL_URL.format(s=arch[0], reg=reg)

    def load_pretrained(self, path: str) -> None:
        """Load an official-layout DINOv2 checkpoint (``mask_token`` is ignored).

        Raises:
            FileNotFoundError: ``path`` is missing or cannot be downloaded.
            ValueError: A key is missing, unexpected or of another shape; the message
                names the key and both shapes.
        """
        state = load_weights(path)
        state.pop('mask_token', None)
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                 for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            lines = ([f'missing keys: {missing}'] if missing else []) + (
                [f'unexpected keys: {unexpected}'] if unexpected else []) + wrong
            raise ValueError(f'{path} does not fit DINOv2(embed_dims={self.embed_dims}, '
                             f'num_layers={self.num_layers}, num_register_tokens='
                             f'{self.num_register_tokens}):\n  ' + '\n  '.join(lines))
        self.pretrained_fingerprint = tensor_fingerprint(state)
        self.load_state_dict({**state, '_extra_state': self.get_extra_state()})
        print_log(f'DINOv2: loaded pretrained weights from {path}', logger='current')

    def _add_lora(self, rank: int = 4, alpha: float = 4.0, dropout: float = 0.0,
                  targets: Sequence[str] = ('q', 'v'),
                  layers: Optional[Sequence[int]] = None) -> None:
        unknown = sorted(set(targets) - set(self.lora_target_names))
        if unknown or not targets:
            raise ValueError(f'Unknown LoRA target(s) {unknown or list(targets)}; valid '
                             f'targets are {list(self.lora_target_names)}')
        C = self.embed_dims
        fc1, fc2 = ('mlp.w12', 'mlp.w3') if self.ffn_type == 'swiglu' else ('mlp.fc1', 'mlp.fc2')
        rows = {'q': ('attn.qkv', (0, C)), 'k': ('attn.qkv', (C, 2 * C)),
                'v': ('attn.qkv', (2 * C, 3 * C)), 'qkv': ('attn.qkv', (0, 3 * C)),
                'proj': ('attn.proj', (0, C)),
                'fc1': (fc1, (0, self.blocks[0].get_submodule(fc1).out_features)),
                'fc2': (fc2, (0, C))}
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
                module, span = rows[target]
                parts_by_module.setdefault(f'blocks.{index}.{module}', {})[target] = span
        add_lora(self, parts_by_module, rank=rank, alpha=alpha, dropout=dropout)

    def merge_lora(self) -> None:
        """Fold the LoRA adapters into the frozen weights (inference at plain-ViT cost)."""
        merge_lora(self)

    def unmerge_lora(self) -> None:
        """Undo :meth:`merge_lora`."""
        unmerge_lora(self)

    def _drop_restorable_weights(self, module, state_dict, prefix, local_metadata):
        """Keep frozen pretrained weights out of checkpoints: the pretrained file has them.

        Without a pretrained file (random init) they are the only copy and stay in.
        """
        if self.pretrained and self.frozen:
            for key in self.frozen_keys:
                state_dict.pop(prefix + key, None)
        return state_dict

    def get_extra_state(self) -> torch.Tensor:
        """Saved with every state dict: which pretrained weights the model was built on
        (the file and the fingerprint of its tensors, as a tensor of JSON text)."""
        return encode_record(dict(pretrained=self.pretrained,
                                  fingerprint=self.pretrained_fingerprint))

    def set_extra_state(self, state: torch.Tensor) -> None:
        """Nothing to restore: the pretrained weights come from ``pretrained``; the
        load pre-hook has compared their fingerprints already."""

    def _frozen_value(self, key: str) -> torch.Tensor:
        """The frozen parameter ``key`` as the pretrained file holds it (unmerged)."""
        module_name, _, name = key.rpartition('.')
        module = self.get_submodule(module_name)
        if isinstance(module, LoRALinear) and name == 'weight':
            return module.unmerged_weight()
        return getattr(module, name).detach()

    def _check_and_complete(self, state_dict, prefix, local_metadata, strict,
                            missing_keys, unexpected_keys, error_msgs):
        """Before loading: refuse tensors of other shapes and adapters trained on other
        pretrained weights; fill in the frozen weights a checkpoint left out."""
        own = dict(chain(self.named_parameters(), self.named_buffers()))
        for name, value in own.items():
            theirs = state_dict.get(prefix + name)
            if isinstance(theirs, torch.Tensor) and theirs.shape != value.shape:
                raise ValueError(f'{prefix}{name}: the checkpoint has shape '
                                 f'{tuple(theirs.shape)}, the model {tuple(value.shape)}')
        record = decode_record(state_dict.get(prefix + '_extra_state'))
        left_out = sorted(k for k in self.frozen_keys if prefix + k not in state_dict)
        if left_out and any(k.startswith(prefix) for k in state_dict):
            self._check_pretrained(record, left_out)
            for key in left_out:
                state_dict[prefix + key] = self._frozen_value(key)
        state_dict.setdefault(prefix + '_extra_state', self.get_extra_state())

    def _check_pretrained(self, record: Dict, left_out: Sequence[str]) -> None:
        """Raise if the frozen weights a checkpoint left out cannot be the ones its
        adapters were trained on."""
        trained_on = record.get('pretrained') or 'an unrecorded file'
        if not (self.pretrained and self.frozen):
            raise ValueError(
                f'the checkpoint leaves out {len(left_out)} frozen DINOv2 weights (e.g. '
                f'{left_out[0]}): they come from the pretrained file it was trained with '
                f'({trained_on}), but this model has pretrained=None; set '
                'model.backbone.pretrained to that file')
        if (self.verify_pretrained and record.get('fingerprint')
                and record['fingerprint'] != self.pretrained_fingerprint):
            raise ValueError(
                f'the checkpoint\'s adapters were trained on the pretrained weights '
                f'{trained_on} (fingerprint {record["fingerprint"][:16]}), but this model '
                f'loaded {self.pretrained} (fingerprint {self.pretrained_fingerprint[:16]}): other '
                'weights, so the adapters would compute something else. Point '
                'model.backbone.pretrained at the file the checkpoint was trained with '
                '(or set model.backbone.verify_pretrained=False to load it anyway)')

    def train(self, mode: bool = True) -> 'DINOv2':
        """Keep frozen weights in eval mode; LoRA dropout follows ``mode``."""
        return train_adapters_only(self, mode) if self.frozen else super().train(mode)

    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """Position embedding (class slot first) for an ``h`` x ``w`` patch grid.

        As the official ``interpolate_pos_encoding``: bicubic resizing of the trained
        grid, either by ``scale_factor=((h + offset) / M, (w + offset) / M)`` or to
        ``size=(h, w)`` when the offset is 0, antialiased or not by variant; the
        trained grid itself is returned unchanged.
        """
        grid = math.isqrt(self.pos_embed.shape[1] - 1)
        if h == w == grid:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        patch_pos = pos_embed[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            resize = dict(scale_factor=((h + self.interpolate_offset) / grid,
                                        (w + self.interpolate_offset) / grid))
        else:
            resize = dict(size=(h, w))
        patch_pos = F.interpolate(patch_pos, mode='bicubic',
                                  antialias=self.interpolate_antialias, **resize)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pos_embed[:, :1], patch_pos], dim=1).to(self.pos_embed.dtype)

    def _warn_padding(self, height: int, width: int) -> None:
        if self._warned_padding:
            return
        self._warned_padding = True
        p = self.patch_size
        print_log(
            f'DINOv2: a {height}x{width} input is not a multiple of the patch size {p}: it is '
            f'padded to {-(-height // p) * p}x{-(-width // p) * p}, and a segmentor resizes '
            'logits of the padded image onto the unpadded one (stretched predictions). Pad in '
            f'the data preprocessor instead (size_divisor={p}, test_cfg=dict(size_divisor='
            f'{p})), which crops the padding off the predictions again', logger='current',
            level=logging.WARNING)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        B, _, H, W = x.shape
        p = self.patch_size
        if H < p or W < p:
            raise ValueError(f'DINOv2 input of {H}x{W} pixels is smaller than one '
                             f'{p}x{p} patch')
        h, w = -(-H // p), -(-W // p)
        if (h * p, w * p) != (H, W):
            self._warn_padding(H, W)
            x = F.pad(x, (0, w * p - W, 0, h * p - H))
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        x = x + self.interpolate_pos_encoding(h, w)
        if self.num_register_tokens:
            x = torch.cat([x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]], dim=1)
        features = {}
        first_patch = 1 + self.num_register_tokens
        # Blocks after the last output cannot change the outputs and are not run.
        checkpointed = self.with_cp and self.training and torch.is_grad_enabled()
        for index, block in enumerate(self.blocks[:max(self.out_indices) + 1]):
            if checkpointed:
                x = checkpoint(block, x, use_reentrant=False,
                               context_fn=partial(create_selective_checkpoint_contexts,
                                                  _keep_attention))
            else:
                x = block(x)
            if index in self.out_indices:
                out = self.norm(x) if self.final_norm else x
                features[index] = out[:, first_patch:].transpose(1, 2).reshape(B, -1, h, w)
        return tuple(features[index] for index in self.out_indices)
