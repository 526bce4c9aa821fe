# This project's hooks, on top of a runtime of MMSeg's: the trainable-parameter count in
# the log, checkpoints that load weights-only (the message hub as plain lists), a stop at
# a NaN or infinite loss, and the record of the pretrained file in checkpoints (checked
# when one is loaded). Put it after MMSeg's default_runtime.py, or after a full MMSeg
# config, in _base_: it holds none of their keys (MMEngine refuses a key that two bases
# set). Checkpoints are saved by AtomicCheckpointHook, in default_hooks, which MMSeg sets
# in its schedules: _base_/schedules/adamw_20k.py, or the config that swaps a backbone
# into an MMSeg config.
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(type='WeightsOnlyCheckpointHook'),
    dict(type='FiniteLossHook'),
    dict(type='PretrainedRecordHook'),
]
# Frozen weights from the pretrained file are not broadcast when DDP wraps the model
# (the registry scope is needed: the Runner looks wrappers up in MMEngine's root registry).
model_wrapper_cfg = dict(type='mmseg.PretrainedWeightsDDP')
