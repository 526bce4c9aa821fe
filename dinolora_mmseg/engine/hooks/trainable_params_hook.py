from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class TrainableParamsHook(Hook):
    """Log total, trainable and LoRA parameter counts when training starts."""

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        total = trainable = lora = 0
        for name, param in model.named_parameters():
            total += param.numel()
            if param.requires_grad:
                trainable += param.numel()
                lora += param.numel() if '.lora_' in name else 0
        runner.logger.info(
            f'Parameters: {total:,} total, {trainable:,} trainable '
            f'({100 * trainable / max(total, 1):.2f} %), of which {lora:,} LoRA')
