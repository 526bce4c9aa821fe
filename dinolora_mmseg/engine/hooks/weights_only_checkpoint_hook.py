from typing import Any

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmseg.registry import HOOKS

BUFFER_FIELDS = {'log_history', 'count_history', 'max_length'}


def _plain(value: Any) -> Any:
    """``value`` with ``HistoryBuffer`` objects as dicts, numpy values as numbers and lists."""
    if isinstance(value, HistoryBuffer):
        return dict(log_history=value.data[0].tolist(), count_history=value.data[1].tolist(),
                    max_length=value.max_length)
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
    weights-only loading refuses (allow-listing them would also admit ``getattr``). This
    hook saves them as plain lists and numbers and rebuilds the buffers on resume.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ('meta', 'message_hub', 'param_schedulers'):
            if key in checkpoint:
                checkpoint[key] = _plain(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        scalars = checkpoint.get('message_hub', {}).get('log_scalars', {})
        for key, value in scalars.items():
            if isinstance(value, dict) and set(value) == BUFFER_FIELDS:
                scalars[key] = HistoryBuffer(**value)
