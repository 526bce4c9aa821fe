# AdamW for the adapters and the head (the frozen backbone gets no gradients and no
# optimizer state), 500 warm-up iterations, then linear decay over 20k iterations;
# validation and a checkpoint every 2k iterations, saved by AtomicCheckpointHook (a kill
# or a full disk while saving keeps the previous checkpoint).
_base_ = 'mmseg::_base_/schedules/schedule_20k.py'
max_iters = 20000
optimizer = dict(_delete_=True, type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.01)
optim_wrapper = dict(optimizer=optimizer)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=500, end=max_iters)
]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
