"""Low-rank adapters (LoRA) for linear layers, with merge and unmerge.

``y = W x + b + (alpha / rank) * B(A(dropout(x)))``, where ``A`` is Kaiming-uniform
initialised and ``B`` is zero, so a freshly adapted model computes exactly what the
pretrained one does. An adapter may write to a slice of the output rows only, which is
how the query, key and value thirds of a fused ``qkv`` projection are adapted apart.
"""
import math
from typing import Dict, Iterator, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .lora_norm import LayerNormKeepingNormalized

RowRange = Tuple[int, int]


class LoRALinear(nn.Linear):
    """``nn.Linear`` with low-rank adapters on chosen ranges of output rows.

    The frozen ``weight`` and ``bias`` keep their names, so a state dict of the
    adapted model holds the original keys plus ``lora_A.<part>`` and ``lora_B.<part>``.

    Args:
        in_features (int): Input width.
        out_features (int): Output width.
        parts (Mapping[str, tuple[int, int]]): Adapter name -> ``(start, end)`` of
            the output rows it adds to.
        rank (int): Rank ``r`` of each adapter.
        alpha (float): Scale numerator; the update is multiplied by ``alpha / rank``.
        dropout (float): Dropout probability on the adapter's input.
        bias (bool): Whether the layer has a bias.
        device (torch.device, optional): Where the frozen weight is allocated.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 parts: Mapping[str, RowRange],
                 rank: int = 4,
                 alpha: float = 4.0,
                 dropout: float = 0.0,
                 bias: bool = True,
                 device=None):
        super().__init__(in_features, out_features, bias=bias, device=device)
        if not isinstance(rank, int) or rank <= 0:
            raise ValueError(f'LoRA rank must be a positive integer, got {rank!r}')
        if alpha <= 0:
            raise ValueError(f'LoRA alpha must be positive, got {alpha!r}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'LoRA dropout must be in [0, 1), got {dropout!r}')
        for name, (start, end) in parts.items():
            if not 0 <= start < end <= out_features:
                raise ValueError(f'LoRA part {name!r} rows ({start}, {end}) do not fit '
                                 f'the {out_features} outputs')
        self.parts: Dict[str, RowRange] = dict(parts)
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        factory = dict(dtype=self.weight.dtype)
        for name, (start, end) in self.parts.items():
            a = torch.empty(rank, in_features, **factory)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.lora_A[name] = nn.Parameter(a)
            self.lora_B[name] = nn.Parameter(torch.zeros(end - start, rank, **factory))
        self.merged = False
        self._merge_after_load = False
        self.register_load_state_dict_post_hook(self._merge_again)

    @classmethod
    def from_linear(cls, linear: nn.Linear, parts: Mapping[str, RowRange],
                    **lora_kwargs) -> 'LoRALinear':
        """Wrap an existing layer, sharing its weight and bias parameters."""
        layer = cls(linear.in_features, linear.out_features, parts,
                    bias=linear.bias is not None, device='meta', **lora_kwargs)
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.lora_A.to(linear.weight.device)
        layer.lora_B.to(linear.weight.device)
        return layer

    def lora_factors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """All adapters as one pair: ``A`` (parts * r, in) and ``B`` (out, parts * r).

        ``B`` holds each part's factor in that part's output rows and zeros elsewhere,
        so ``B @ A`` is the whole update of ``weight`` (before scaling).
        """
        r, num_parts = self.rank, len(self.parts)
        a = torch.cat([self.lora_A[name] for name in self.parts])
        b = sum(F.pad(self.lora_B[name], (i * r, (num_parts - 1 - i) * r, start,
                                          self.out_features - end))
                for i, (name, (start, end)) in enumerate(self.parts.items()))
        return a, b

    @torch.no_grad()
    def _fold_update_into(self, weight: torch.Tensor, sign: int) -> torch.Tensor:
        """Add (``sign=1``) or subtract (``sign=-1``) the adapters' update in place:
        ``weight[start:end] += sign * (alpha / r) * B_part @ A_part`` for each part, with
        the factors cast to ``weight``'s dtype. Rows no part adapts are left untouched;
        no zero-padded factors and no full-size update tensor are allocated.

        Args:
            weight (torch.Tensor): ``(out_features, in_features)``, changed in place.
            sign (int): ``1`` to add the update, ``-1`` to take it out.

        Returns:
            torch.Tensor: ``weight``.
        """
        for name, (start, end) in self.parts.items():
            weight[start:end].addmm_(self.lora_B[name].to(weight.dtype),
                                     self.lora_A[name].to(weight.dtype),
                                     alpha=sign * self.scaling)
        return weight

    def merged_weight(self) -> torch.Tensor:
        """``weight`` with the adapters' update folded in, whether or not the layer is
        merged: the weight of the same layer without LoRA. Detached; when merged it is
        ``weight`` itself (not a copy), otherwise a new tensor."""
        if self.merged:
            return self.weight.detach()
        return self._fold_update_into(self.weight.detach().clone(), 1)

    def _dropping(self) -> bool:
        return isinstance(self.lora_dropout, nn.Dropout) and self.lora_dropout.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            self._refuse_training_while_merged()
            return F.linear(x, self.weight, self.bias)
        if not (torch.is_grad_enabled() or self._dropping()):
            # Inference: one product with the updated weight costs less than the
            # adapter's two thin ones plus a pass over the output.
            return F.linear(x, self.merged_weight(), self.bias)
        a, b = self.lora_factors()
        x2d = x.reshape(-1, self.in_features)
        out = F.linear(x2d, self.weight, self.bias)
        update = F.linear(self.lora_dropout(x2d), a)
        return self._add_update(out, update, b).view(*x.shape[:-1], self.out_features)

    def forward_after_norm(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        """``self(norm(x))`` that keeps one activation instead of two for backward.

        Training ``self(norm(x))`` keeps the norm's input and the adapter's input
        ``norm(x)``. Here ``norm(x) = x_hat * w + b`` is formed from the normalised
        ``x_hat``, and the adapter computes ``A norm(x)`` as ``(A * w) x_hat + A b``,
        so the normalisation and the adapter both keep ``x_hat`` and the frozen
        product keeps nothing. Equal to ``self(norm(x))`` up to rounding; outside
        training (or with adapter dropout active, or a norm without affine) it is
        ``self(norm(x))``.

        Args:
            x (torch.Tensor): Input of ``norm``, ``(..., in_features)``.
            norm (nn.LayerNorm): Layer norm over the last dimension.
        """
        if (self.merged or not torch.is_grad_enabled() or self._dropping()
                or norm.weight is None or norm.bias is None):
            return self(norm(x))
        y, x_hat = LayerNormKeepingNormalized.apply(x, norm.weight, norm.bias, norm.eps)
        x_hat = x_hat.reshape(-1, self.in_features)
        out = F.linear(y.reshape(-1, self.in_features), self.weight, self.bias)
        a, b = self.lora_factors()
        update = torch.addmm(a @ norm.bias, x_hat, (a * norm.weight).t())
        return self._add_update(out, update, b).view(*x.shape[:-1], self.out_features)

    def _refuse_training_while_merged(self) -> None:
        """A merged layer computes with ``W + delta`` as a constant: its adapters would
        get no gradient, so training them is refused instead of silently freezing them."""
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.lora_parameters()):
            raise RuntimeError(
                f'{type(self).__name__}({self.in_features}, {self.out_features}) is merged '
                '(merge_lora() was called): its adapters cannot train. Call unmerge_lora() '
                'before training, or run inference under torch.no_grad().')

    def lora_parameters(self) -> Iterator[nn.Parameter]:
        """The adapter factors ``lora_A.<part>`` and ``lora_B.<part>``."""
        yield from self.lora_A.values()
        yield from self.lora_B.values()

    def unmerged_weight(self) -> torch.Tensor:
        """``weight`` without the adapters' update: the frozen pretrained weight."""
        if not self.merged:
            return self.weight.detach()
        return self._fold_update_into(self.weight.detach().clone(), -1)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """State dicts hold the frozen weight unmerged (the pretrained weight plus the
        adapters), whether or not the layer is merged at the time, so that loading one
        never applies the update twice."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.merged:
            destination[prefix + 'weight'] = self.unmerged_weight()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        """Load an (unmerged) state dict; a merged layer is merged again with the loaded
        adapters. Adapters of another rank or width are refused, naming key and shapes."""
        factors = [(f'{prefix}lora_{ab}.{name}', param) for ab, params in
                   (('A', self.lora_A), ('B', self.lora_B)) for name, param in params.items()]
        for key, param in factors:
            if key in state_dict and state_dict[key].shape != param.shape:
                raise ValueError(
                    f'{key}: the checkpoint has shape {tuple(state_dict[key].shape)}, the model '
                    f'{tuple(param.shape)} (LoRA rank {self.rank}): the checkpoint\'s adapters '
                    'are of another rank or layer width; build the model with the LoRA '
                    'settings it was trained with')
        self._merge_after_load = self.merged  # once the adapters (children) are loaded too
        self.unmerge()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    @staticmethod
    def _merge_again(layer: 'LoRALinear', incompatible_keys) -> None:
        if layer._merge_after_load:
            layer._merge_after_load = False
            layer.merge()

    def _add_update(self, out: torch.Tensor, update: torch.Tensor,
                    b: torch.Tensor) -> torch.Tensor:
        """``out += scaling * update @ b.T`` in place (training): no scaled copy of the
        update and no pass of its own over ``out``."""
        return out.addmm_(update.to(out.dtype), b.t().to(out.dtype), alpha=self.scaling)

    def merge(self) -> None:
        """Fold the adapters into ``weight``; the forward then costs a plain linear."""
        if not self.merged:
            self._fold_update_into(self.weight, 1)
            self.merged = True

    def unmerge(self) -> None:
        """Take the adapters out of ``weight`` again."""
        if self.merged:
            self._fold_update_into(self.weight, -1)
            self.merged = False

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, lora_parts={list(self.parts)}, '
                f'rank={self.rank}, scaling={self.scaling:g}')


def add_lora(model: nn.Module, parts_by_module: Mapping[str, Mapping[str, RowRange]],
             **lora_kwargs) -> None:
    """Replace named ``nn.Linear`` submodules of ``model`` by :class:`LoRALinear`.

    Args:
        model (nn.Module): The model to adapt in place.
        parts_by_module (Mapping): Dotted module name -> the ``parts`` argument of
            :class:`LoRALinear` for it.
        **lora_kwargs: ``rank``, ``alpha`` and ``dropout``.
    """
    modules = dict(model.named_modules())
    for name, parts in parts_by_module.items():
        linear = modules.get(name)
        if not isinstance(linear, nn.Linear) or isinstance(linear, LoRALinear):
            raise ValueError(f'LoRA target {name!r} is not a plain nn.Linear '
                             f'of {type(model).__name__} (found {type(linear).__name__})')
        parent_name, _, child = name.rpartition('.')
        parent = modules[parent_name] if parent_name else model
        setattr(parent, child, LoRALinear.from_linear(linear, parts, **lora_kwargs))


def lora_layers(model: nn.Module) -> Iterator[LoRALinear]:
    """All :class:`LoRALinear` layers of ``model``."""
    return (m for m in model.modules() if isinstance(m, LoRALinear))


def train_adapters_only(model: nn.Module, mode: bool = True) -> nn.Module:
    """``model.train(mode)`` for a frozen model: everything stays in eval mode (no
    dropout, stochastic depth or batch-statistics updates) except the adapters'
    dropout, which follows ``mode``; ``model.training`` reports ``mode``."""
    nn.Module.train(model, False)
    for layer in lora_layers(model):
        layer.lora_dropout.train(mode)
    model.training = mode
    return model


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter of ``model`` into its frozen weights."""
    for layer in lora_layers(model):
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo :func:`merge_lora`."""
    for layer in lora_layers(model):
        layer.unmerge()


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The tensors of ``model.state_dict()`` with every adapter folded into its layer's
    weight and the adapter factors left out: the state dict of the same model without
    LoRA, whether or not ``model`` is merged.

    Args:
        model (nn.Module): A model with :class:`LoRALinear` layers.
    """
    state = model.state_dict()
    for name, layer in model.named_modules():
        key = f'{name}.weight' if name else 'weight'
        if isinstance(layer, LoRALinear) and key in state:
            state[key] = layer.merged_weight()
    return {k: v for k, v in state.items()
            if isinstance(v, torch.Tensor) and '.lora_' not in k}
