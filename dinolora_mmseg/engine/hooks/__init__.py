from .atomic_checkpoint_hook import AtomicCheckpointHook
from .eomt_mask_annealing_hook import EoMTMaskAnnealingHook
from .finite_loss_hook import FiniteLossHook
from .load_checkpoint_hook import LoadCheckpointHook
from .pretrained_record_hook import PretrainedRecordHook
from .trainable_params_hook import TrainableParamsHook
from .weights_only_checkpoint_hook import WeightsOnlyCheckpointHook

__all__ = [
    'AtomicCheckpointHook', 'EoMTMaskAnnealingHook', 'FiniteLossHook', 'LoadCheckpointHook',
    'PretrainedRecordHook', 'TrainableParamsHook', 'WeightsOnlyCheckpointHook'
]
