"""LoRA for linear layers, ``y = W x + b + (alpha / rank) * B(A(dropout(x)))``, and
:func:`fold_lora`, which turns adapted layers back into the plain ``nn.Linear`` they compute."""
import copy
import math
from itertools import chain
from typing import Dict, Iterator, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .lora_norm import NORMALIZED

RowRange = Tuple[int, int]


class LoRALinear(nn.Linear):
    """``nn.Linear`` with low-rank adapters on chosen ranges of output rows.

    ``A`` starts Kaiming-uniform and ``B`` zero, so a fresh layer computes the plain one;
    parts on row ranges adapt the q, k and v thirds of a fused ``qkv`` apart. The state
    dict holds ``weight``, ``bias``, ``lora_A.<part>`` and ``lora_B.<part>``.

    Args:
        in_features (int): Input width.
        out_features (int): Output width.
        parts (Mapping[str, tuple[int, int]]): Adapter name -> its output rows.
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
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        factory = dict(dtype=self.weight.dtype)
        for name, (start, end) in self.parts.items():
            a = torch.empty(rank, in_features, **factory)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.lora_A[name] = nn.Parameter(a)
            self.lora_B[name] = nn.Parameter(torch.zeros(end - start, rank, **factory))

    @classmethod
    def from_linear(cls, linear: nn.Linear, parts: Mapping[str, RowRange],
                    **lora_kwargs) -> 'LoRALinear':
        """Wrap an existing layer, sharing its weight and bias parameters."""
        layer = cls(linear.in_features, linear.out_features, parts,
                    bias=linear.bias is not None, device='meta', **lora_kwargs)
        layer.weight, layer.bias = linear.weight, linear.bias
        layer.lora_A.to(linear.weight.device)
        layer.lora_B.to(linear.weight.device)
        return layer

    def lora_factors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """All parts as one pair, ``A`` (parts * r, in) and ``B`` (out, parts * r), each
        part's ``B`` in its rows, zeros elsewhere: ``B @ A`` is the update of ``weight``."""
        r, num_parts = self.rank, len(self.parts)
        a = torch.cat([self.lora_A[name] for name in self.parts])
        b = sum(F.pad(self.lora_B[name], (i * r, (num_parts - 1 - i) * r, start,
                                          self.out_features - end))
                for i, (name, (start, end)) in enumerate(self.parts.items()))
        return a, b

    @torch.no_grad()
    def add_update_to(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight[start:end] += (alpha / r) * B_part @ A_part`` in place for each part, in
        ``weight``'s dtype (other rows unchanged); returns ``weight``."""
        for name, (start, end) in self.parts.items():
            weight[start:end].addmm_(self.lora_B[name].to(weight.dtype),
                                     self.lora_A[name].to(weight.dtype), alpha=self.scaling)
        return weight

    def _dropping(self) -> bool:
        return isinstance(self.lora_dropout, nn.Dropout) and self.lora_dropout.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """For ``x`` from a :class:`~.lora_norm.LayerNormSharingNormalized` the adapter
        reads the norm's normalised input (the same values, one activation less kept)."""
        if not (torch.is_grad_enabled() or self._dropping()):  # inference: one product
            return F.linear(x, self.add_update_to(self.weight.detach().clone()), self.bias)
        a, b = self.lora_factors()
        x2d = x.reshape(-1, self.in_features)
        out = F.linear(x2d, self.weight, self.bias)
        normalized = getattr(x, NORMALIZED, None)
        if normalized is None or self._dropping():
            update = F.linear(self.lora_dropout(x2d), a)
        else:  # x = x_hat * w + b: A x from the x_hat the norm keeps anyway
            x_hat, weight, bias = normalized
            update = torch.addmm(a @ bias, x_hat.reshape(-1, self.in_features),
                                 (a * weight).t())
        # out += scaling * update @ b.T in place: no scaled copy, no pass of its own.
        out.addmm_(update.to(out.dtype), b.t().to(out.dtype), alpha=self.scaling)
        return out.view(*x.shape[:-1], self.out_features)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        """Refuse adapters of another rank or width, naming the key and both shapes."""
        factors = [(f'{prefix}lora_{ab}.{name}', param) for ab, params in
                   (('A', self.lora_A), ('B', self.lora_B)) for name, param in params.items()]
        for key, param in factors:
            if key in state_dict and state_dict[key].shape != param.shape:
                raise ValueError(
                    f'{key}: the checkpoint has shape {tuple(state_dict[key].shape)}, the model '
                    f'{tuple(param.shape)} (LoRA rank {self.rank}): the checkpoint\'s adapters '
                    'are of another rank or layer width; build the model with the LoRA '
                    'settings it was trained with')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, lora_parts={list(self.parts)}, '
                f'rank={self.rank}, scaling={self.scaling:g}')


def add_lora(model: nn.Module, parts_by_module: Mapping[str, Mapping[str, RowRange]],
             **lora_kwargs) -> None:
    """Replace named ``nn.Linear`` submodules of ``model`` by :class:`LoRALinear`.

    Args:
        model (nn.Module): The model to adapt in place.
        parts_by_module (Mapping): Dotted module name -> its :class:`LoRALinear` parts.
        **lora_kwargs: ``rank``, ``alpha`` and ``dropout``.
    """
    modules = dict(model.named_modules())
    for name, parts in parts_by_module.items():
        linear = modules.get(name)
        if not isinstance(linear, nn.Linear) or isinstance(linear, LoRALinear):
            raise ValueError(f'LoRA target {name!r} is not a plain nn.Linear '
                             f'of {type(model).__name__} (found {type(linear).__name__})')
        model.set_submodule(name, LoRALinear.from_linear(linear, parts, **lora_kwargs))


def lora_layers(model: nn.Module) -> Iterator[LoRALinear]:
    """All :class:`LoRALinear` layers of ``model``."""
    return (m for m in model.modules() if isinstance(m, LoRALinear))


def train_adapters_only(model: nn.Module, mode: bool = True) -> nn.Module:
    """``model.train(mode)`` for a frozen model: all in eval mode but the adapters'
    dropout; ``model.training`` reports ``mode``."""
    nn.Module.train(model, False)
    for layer in lora_layers(model):
        layer.lora_dropout.train(mode)
    model.training = mode
    return model


@torch.no_grad()
def fold_lora(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` with every :class:`LoRALinear` replaced by the ``nn.Linear`` it computes
    (:meth:`LoRALinear.add_update_to`): the state dict of the model built without LoRA.

    Args:
        model (nn.Module): A model with :class:`LoRALinear` layers (or one of them).
        inplace (bool): Fold into ``model`` itself. Otherwise ``model`` is unchanged and
            a copy is folded that shares every other tensor's storage with it.
    """
    if not inplace:
        adapted = {id(layer.weight) for layer in lora_layers(model)}
        memo = {id(t): (nn.Parameter(t.detach(), t.requires_grad)
                        if isinstance(t, nn.Parameter) else t.detach())
                for t in chain(model.parameters(), model.buffers()) if id(t) not in adapted}
        model = copy.deepcopy(model, memo)
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                           device='meta')
        linear.weight, linear.bias = layer.weight, layer.bias
        layer.add_update_to(linear.weight)
        if not name:
            return linear
        model.set_submodule(name, linear)
    return model
