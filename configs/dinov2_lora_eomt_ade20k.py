# EoMT on DINOv2 ViT-L/14-reg4 with LoRA, ADE20k (150 classes), 518 x 518 crops: the
# paper's ADE20k semantic recipe (tue-mps/eomt, configs/dinov2/ade20k/semantic/
# eomt_large_512.yaml): 100 queries in the last 4 blocks, 16 images per iteration (2 on
# each of 8 processes), 31 epochs = 39184 iterations, AdamW 1e-4 (weight decay 0.05),
# gradient clipping at norm 0.01, warm-up then polynomial decay (power 0.9). Mask
# annealing per query block (first block first): probability 1 until start, decaying as
# (1 - progress) ** 0.9 to 0 at end, the paper's step numbers (its steps are also 16
# images); from iteration 32600 on training attends as inference does.
# Test images are resized to a short side of 518 px and predicted whole (the paper slides
# 512-px windows).
_base_ = [
    './_base_/models/dinov2_lora_eomt.py', './_base_/datasets/ade20k_518.py',
    'mmseg::_base_/default_runtime.py', './_base_/default_runtime.py',
    './_base_/schedules/adamw_20k.py'
]
model = dict(mask_annealing=dict(start_iters=[6520, 13040, 19560, 26080],
                                 end_iters=[13040, 19560, 26080, 32600], power=0.9))
custom_hooks = _base_.custom_hooks + [dict(type='EoMTMaskAnnealingHook')]
train_dataloader = dict(batch_size=2)
max_iters = 39184
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05), clip_grad=dict(_delete_=True, max_norm=0.01, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=1500, end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
