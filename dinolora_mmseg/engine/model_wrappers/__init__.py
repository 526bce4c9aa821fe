from .pretrained_ddp import PretrainedWeightsDDP

__all__ = ['PretrainedWeightsDDP']
