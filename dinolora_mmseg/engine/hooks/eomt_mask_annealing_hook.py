from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class EoMTMaskAnnealingHook(Hook):
    """Give an :class:`EoMT` segmentor the iteration its attention-mask probabilities
    follow: ``model.set_iteration(runner.iter)`` before every training step (after a
    ``--resume`` too, where ``runner.iter`` continues).

    Refuses a model without ``set_iteration`` at the start of training.
    """

    priority = 'NORMAL'

    @staticmethod
    def _model(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not callable(getattr(model, 'set_iteration', None)):
            raise TypeError(f'EoMTMaskAnnealingHook needs an EoMT segmentor (a model with '
                            f'set_iteration), got {type(model).__name__}; drop the hook '
                            'from custom_hooks')
        return model

    def before_train(self, runner) -> None:
        self._model(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._model(runner).set_iteration(runner.iter)
