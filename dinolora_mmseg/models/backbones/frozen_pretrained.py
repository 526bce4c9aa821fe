"""A backbone's frozen pretrained weights: loading, leaving them out of checkpoints, and
the record of the file they came from."""
import logging
from itertools import chain
from typing import Callable, Dict, Mapping, Optional, Sequence

import torch
from mmengine.logging import print_log
from torch import nn

from ...utils.integrity import file_fingerprint
from ...utils.weights import cached_download, is_url, load_weights

RECORD_KEY = 'pretrained_weights'


class FrozenPretrained:
    """The weights a backbone takes from its pretrained file and keeps frozen.

    The backbone calls :meth:`load` (or :meth:`keep_random`), :meth:`freeze` and
    :meth:`attach`; checkpoints then leave the frozen weights out, and :meth:`record`
    names the file and its fingerprint for :func:`check_pretrained_records`.

    Args:
        family (str): The backbone's name in messages.
        path (str, optional): File or URL in the official key layout; None: random.
        frozen (bool): Freeze the loaded weights (and leave them out of checkpoints).
        dtype (torch.dtype, optional): Of the frozen parameters; None keeps the file's.
        verify (bool): Refuse adapters trained on other pretrained weights.
    """

    def __init__(self, family: str, path: Optional[str], frozen: bool = True,
                 dtype: Optional[torch.dtype] = None, verify: bool = True):
        self.family = family
        self.path = path
        self.frozen = frozen
        self.dtype = dtype
        self.verify = verify
        self.fingerprint: Optional[str] = None
        self.keys: frozenset = frozenset()  # what checkpoints leave out, set by freeze()
        self._prefix: Optional[str] = None  # of the state dict being loaded

    @property
    def leaves_out(self) -> bool:
        """Whether checkpoints leave the frozen weights out (the file restores them)."""
        return bool(self.path) and self.frozen

    def load(self, model: nn.Module,
             from_official: Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]],
             describe: str) -> None:
        """Load the file into ``model`` built on the meta device.

        A zip ``.pth`` is memory-mapped: without ``dtype`` the parameters are its pages
        (shared by the ranks of a run), with one they are cast one tensor at a time.

        Args:
            model (nn.Module): The backbone, built on the meta device.
            from_official (Callable): The official key layout to the model's state dict.
            describe (str): The model's sizes, for messages.

        Raises:
            FileNotFoundError: The file is missing or cannot be downloaded.
            ValueError: Keys missing, unexpected or of other shapes (named).
        """
        local = cached_download(self.path) if is_url(self.path) else self.path
        cast = self.dtype is not None
        state = from_official(load_weights(local, mmap=True))
        params = dict(model.named_parameters())
        own = dict(chain(params.items(), model.named_buffers()))
        problems = [f'{what} keys: {keys}' for what, keys in (
            ('missing', sorted(set(own) - set(state))),
            ('unexpected', sorted(set(state) - set(own)))) if keys]
        problems += [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                     for k in own if k in state and state[k].shape != own[k].shape]
        if problems:
            raise ValueError(f'{self.path} does not fit {self.family}({describe}):\n  '
                             + '\n  '.join(problems))
        self.fingerprint = file_fingerprint(local)
        for key in list(state):  # one tensor at a time, the file's copy freed as it goes
            dtype = self.dtype if cast and key in params else torch.float32
            state[key] = state.pop(key).to(dtype, copy=cast)
        model.load_state_dict(state, assign=True)
        print_log(f'{self.family}: loaded pretrained weights from {self.path}',
                  logger='current')

    def keep_random(self, model: nn.Module) -> None:
        """No file: keep ``model``'s random weights (in ``dtype``), with a warning."""
        print_log(f'{self.family}: no pretrained weights given; the backbone is randomly '
                  'initialised', logger='current', level=logging.WARNING)
        if self.dtype is not None:
            for param in model.parameters():
                param.data = param.data.to(self.dtype)

    def freeze(self, model: nn.Module) -> None:
        """Freeze ``model``'s weights (if ``frozen``) and note them and the buffers as
        what checkpoints leave out. Call it before adding trainable modules."""
        if self.frozen:
            model.requires_grad_(False)
        self.keys = frozenset(chain(
            (name for name, p in model.named_parameters() if not p.requires_grad),
            (name for name, _ in model.named_buffers())))

    def attach(self, model: nn.Module) -> None:
        """Register ``model``'s state-dict hooks: :meth:`_leave_out`,
        :meth:`_check_shapes`, :meth:`_filter_missing`."""
        model._register_state_dict_hook(self._leave_out)
        model._register_load_state_dict_pre_hook(self._check_shapes, with_module=True)
        model.register_load_state_dict_post_hook(self._filter_missing)

    def keep_in_state_dicts(self) -> None:
        """The frozen weights no longer equal the file's (adapters folded in): state dicts
        carry them from now on, and no record names the file."""
        self.path = self.fingerprint = None

    def record(self) -> Dict[str, Optional[str]]:
        """Which pretrained weights the model was built on: the file and its fingerprint."""
        return dict(pretrained=self.path, fingerprint=self.fingerprint)

    def check_record(self, record: Mapping[str, Optional[str]]) -> None:
        """Raise a ValueError naming both files if a checkpoint's adapters were trained on
        other pretrained weights (``record``; an empty one, from before records, passes)."""
        if not (self.leaves_out and self.verify and record.get('fingerprint')):
            return
        if record['fingerprint'] != self.fingerprint:
            raise ValueError(
                f'the checkpoint\'s adapters were trained on the pretrained weights '
                f'{record.get("pretrained")} (fingerprint {record["fingerprint"][:16]}), but '
                f'this model loaded {self.path} (fingerprint {self.fingerprint[:16]}): other '
                'weights, so the adapters would compute something else. Point '
                'model.backbone.pretrained at the file the checkpoint was trained with '
                '(or set model.backbone.verify_pretrained=False to load it anyway)')

    def _leave_out(self, module, state_dict, prefix, local_metadata):
        """Leave the frozen weights out of state dicts (kept without a file)."""
        if self.leaves_out:
            for key in self.keys:
                state_dict.pop(prefix + key, None)
        return state_dict

    def _check_shapes(self, module, state_dict, prefix, local_metadata, strict,
                      missing_keys, unexpected_keys, error_msgs):
        """Before loading: refuse tensors of other shapes (``strict=False`` would only
        warn); note the prefix for :meth:`_filter_missing`."""
        # The old in-state record (a SHA-256 of the tensors), not comparable with files'.
        state_dict.pop(prefix + '_extra_state', None)
        own = dict(chain(module.named_parameters(), module.named_buffers()))
        for name, value in own.items():
            theirs = state_dict.get(prefix + name)
            if isinstance(theirs, torch.Tensor) and theirs.shape != value.shape:
                raise ValueError(f'{prefix}{name}: the checkpoint has shape '
                                 f'{tuple(theirs.shape)}, the model {tuple(value.shape)}')
        self._prefix = prefix if any(k.startswith(prefix) for k in state_dict) else None

    def _filter_missing(self, module, incompatible_keys) -> None:
        """After loading: the frozen weights a checkpoint left out are not missing; without
        a file they would stay random, which is refused."""
        prefix, self._prefix = self._prefix, None
        if prefix is None:
            return
        left_out = [key for key in incompatible_keys.missing_keys
                    if key.startswith(prefix) and key[len(prefix):] in self.keys]
        if left_out and not self.path:
            raise ValueError(
                f'the checkpoint leaves out {len(left_out)} frozen {self.family} weights '
                f'(e.g. {left_out[0]}): they come from the pretrained file it was trained '
                'with (named in its meta, pretrained_weights), but this model has '
                'pretrained=None; set model.backbone.pretrained to that file')
        if self.frozen:
            for key in left_out:
                incompatible_keys.missing_keys.remove(key)


def _components(model: nn.Module) -> Dict[str, FrozenPretrained]:
    """The :class:`FrozenPretrained` of every backbone in ``model``, by module name."""
    return {name: module.frozen_weights for name, module in model.named_modules()
            if isinstance(getattr(module, 'frozen_weights', None), FrozenPretrained)}


def pretrained_records(model: nn.Module) -> Dict[str, Dict[str, Optional[str]]]:
    """``meta[RECORD_KEY]`` of a checkpoint of ``model``: by module name, the record of
    every backbone whose frozen weights it leaves out."""
    return {name: component.record() for name, component in _components(model).items()
            if component.leaves_out}


def check_pretrained_records(model: nn.Module, checkpoint: Mapping) -> None:
    """Refuse a checkpoint whose adapters were trained on other pretrained weights than
    ``model``'s backbones loaded.

    Args:
        model (nn.Module): The model the checkpoint is about to be loaded into.
        checkpoint (Mapping): The checkpoint (``meta`` and ``state_dict``).
    """
    records = (checkpoint.get('meta') or {}).get(RECORD_KEY) or {}
    for name, component in _components(model).items():
        component.check_record(records.get(name) or {})


def names_of_pretrained_weights(model: nn.Module) -> Sequence[str]:
    """Names of ``model``'s parameters and buffers from pretrained files (the same on
    every rank)."""
    return sorted(f'{name}.{key}' if name else key
                  for name, component in _components(model).items() if component.leaves_out
                  for key in component.keys)
