"""Pretrained weights that stay frozen: loading them, and keeping them out of checkpoints."""
from itertools import chain
from typing import Dict, Sequence

import torch
from mmengine.logging import print_log

from ...utils.fingerprint import decode_record, encode_record, tensor_fingerprint
from ...utils.weights import load_weights


class FrozenPretrainedMixin:
    """Loading and checkpoint behaviour of a backbone with frozen pretrained weights.

    The pretrained file is loaded into a model built on the meta device: its tensors
    become the parameters, so memory never holds two copies of the weights. Training
    checkpoints leave the frozen weights out and record the fingerprint of the file
    they came from; loading such a checkpoint takes them from ``pretrained`` again.

    The class using it sets ``family`` (its name in messages), ``pretrained``,
    ``pretrained_fingerprint``, ``verify_pretrained``, ``frozen``, ``frozen_dtype``
    and ``frozen_keys``, and implements ``_from_official`` (the official key layout to
    its own state dict).
    """

    def load_pretrained(self, path: str) -> None:
        """Load an official-layout checkpoint into the parameters built on the meta device.

        The parameters become the file's tensors (cast one at a time to ``frozen_dtype``,
        read through a memory map then); buffers are float32.

        Raises:
            FileNotFoundError: ``path`` is missing or cannot be downloaded.
            ValueError: A key is missing, unexpected or of another shape; the message
                names the key and both shapes.
        """
        cast = self.frozen_dtype is not None
        state = self._from_official(load_weights(path, mmap=cast))
        params = dict(self.named_parameters())
        own = dict(chain(params.items(), self.named_buffers()))
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                 for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            lines = ([f'missing keys: {missing}'] if missing else []) + (
                [f'unexpected keys: {unexpected}'] if unexpected else []) + wrong
            raise ValueError(f'{path} does not fit {self.family}({self._describe()}):\n  '
                             + '\n  '.join(lines))
        self.pretrained_fingerprint = tensor_fingerprint(state)
        for key in list(state):  # one tensor at a time, the file's copy freed as it goes
            dtype = self.frozen_dtype if cast and key in params else torch.float32
            state[key] = state.pop(key).to(dtype, copy=cast)
        self.load_state_dict({**state, '_extra_state': self.get_extra_state()}, assign=True)
        print_log(f'{self.family}: loaded pretrained weights from {path}', logger='current')

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
        (the file and the fingerprint of its tensors, as a tensor of JSON text: MMEngine
        broadcasts every state-dict entry as a tensor when a multi-process run starts)."""
        return encode_record(dict(pretrained=self.pretrained,
                                  fingerprint=self.pretrained_fingerprint))

    def set_extra_state(self, state: torch.Tensor) -> None:
        """Nothing to restore: the pretrained weights come from ``pretrained``; the
        load pre-hook has compared their fingerprints already."""

    def _frozen_value(self, key: str) -> torch.Tensor:
        """The frozen parameter ``key`` as the pretrained file holds it."""
        module_name, _, name = key.rpartition('.')
        return getattr(self.get_submodule(module_name), name).detach()

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
                f'the checkpoint leaves out {len(left_out)} frozen {self.family} weights (e.g. '
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
