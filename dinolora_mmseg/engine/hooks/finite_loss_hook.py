import math

from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training at the first NaN or infinite loss, naming the iteration.

    Runs before the checkpoint hook of the same iteration, so weights spoiled by a
    non-finite update never reach a checkpoint; the last checkpoint stays the newest.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = float(outputs['loss'])
        if not math.isfinite(loss):
            raise FloatingPointError(
                f'loss is {loss} at iteration {runner.iter + 1}: training stopped so that '
                'no checkpoint holds the non-finite weights (lower the learning rate, or '
                'check the data of this iteration)')
