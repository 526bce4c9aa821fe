from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..checkpoint_io import load_checkpoint_into


@HOOKS.register_module()
class LoadCheckpointHook(Hook):
    """Load a checkpoint into the model when training starts, as ``load_from`` does, but
    read through :func:`~dinolora_mmseg.utils.checkpoint_file.read_checkpoint`: CRC-checked
    and weights-only, so that a file whose pickle would run code is refused, naming how to
    trust it; a file the user trusts is unpickled in full. ``tools/train.py`` hands the
    config's ``load_from`` to this hook (trusted when listed in ``trusted_checkpoints``).

    It loads before the other hooks' ``before_train``, after the model's own weights are
    initialised (MMEngine's ``load_from`` is loaded there too, earlier than any hook's
    ``before_train``), and not in a run that resumes (``resume=True``: the resumed
    checkpoint holds the weights).

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
