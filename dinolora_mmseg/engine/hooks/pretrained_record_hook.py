from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from ...models.backbones.frozen_pretrained import (RECORD_KEY, check_pretrained_records,
                                                   pretrained_records)


@HOOKS.register_module()
class PretrainedRecordHook(Hook):
    """Record in every checkpoint which pretrained weights its adapters were trained on,
    and refuse to load a checkpoint onto other ones.

    Checkpoints leave the frozen backbone out; it comes from the ``pretrained`` file again.
    Saving writes that file and its fingerprint into ``meta['pretrained_weights']``; loading
    compares them with the file this model loaded, before any weight is restored
    (``model.backbone.verify_pretrained=False`` loads anyway).
    """

    priority = 'VERY_HIGH'  # checked before other hooks act on the loaded checkpoint

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        records = pretrained_records(self._model(runner))
        if records:
            checkpoint.setdefault('meta', {})[RECORD_KEY] = records

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        check_pretrained_records(self._model(runner), checkpoint)
