from typing import Any

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmseg.registry import HOOKS

_BUFFER_KEYS = ('log_history', 'count_history', 'max_length')


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, dict):
        return type(value)((k, _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Write checkpoints that ``torch.load(weights_only=True)`` reads.

    MMEngine stores its message hub as ``HistoryBuffer`` objects and numpy values, which
    torch >= 2.6 refuses to unpickle by default (and allow-listing them would also admit
    ``getattr``). This hook saves them as plain lists and numbers and rebuilds the
    buffers when a run resumes, so ``tools/test.py`` and ``--resume`` load the
    project's own checkpoints without turning weights-only loading off.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get('message_hub')
        if hub is not None:
            hub['log_scalars'] = {
                key: dict(log_history=buffer.data[0].tolist(),
                          count_history=buffer.data[1].tolist(),
                          max_length=buffer.max_length)
                for key, buffer in hub['log_scalars'].items()}
        for key in ('meta', 'message_hub', 'param_schedulers'):
            if key in checkpoint:
                checkpoint[key] = _plain(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        scalars = checkpoint.get('message_hub', {}).get('log_scalars', {})
        for key, value in scalars.items():
            if isinstance(value, dict) and set(value) == set(_BUFFER_KEYS):
                scalars[key] = HistoryBuffer(**value)
