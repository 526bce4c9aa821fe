from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..checkpoint_io import load_checkpoint_into


@HOOKS.register_module()
class LoadCheckpointHook(Hook):
    """Load a checkpoint when training starts, as ``load_from`` does (before the other
    hooks' ``before_train``, not when resuming), but CRC-checked and weights-only unless
    trusted. ``tools/train.py`` hands the config's ``load_from`` to it.

    Args:
        filename (str): Local checkpoint file.
        trusted (bool): The user vouches for the file: unpickle it in full.
    """

    priority = 'VERY_HIGH'

    def __init__(self, filename: str, trusted: bool = False):
        self.filename = filename
        self.trusted = trusted

    def before_train(self, runner) -> None:
        if not runner.cfg.get('resume', False):
            load_checkpoint_into(runner, self.filename, strict=False, trusted=self.trusted)
