from .trainable_params_hook import TrainableParamsHook

__all__ = ['TrainableParamsHook']
