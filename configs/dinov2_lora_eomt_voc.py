# EoMT on DINOv2 ViT-L/14-reg4 with LoRA, Pascal VOC 2012 (21 classes), 518 x 518 crops:
# dinov2_lora_eomt_ade20k.py with the data of dinov2_lora_voc.py and its 20k iterations
# of 16 images (2 on each of 8 processes). The paper has no VOC recipe: its ADE20k mask
# annealing scaled to 20k iterations (starts at 1/6, 2/6, 3/6, 4/6 of the schedule, ends
# one sixth later each), so the last sixth trains without masks.
_base_ = [
    './_base_/models/dinov2_lora_eomt.py', './_base_/datasets/voc12_518.py',
    'mmseg::_base_/default_runtime.py', './_base_/default_runtime.py',
    './_base_/schedules/adamw_20k.py'
]
num_classes = 21
model = dict(
    mask_annealing=dict(start_iters=[3330, 6670, 10000, 13330],
                        end_iters=[6670, 10000, 13330, 16670], power=0.9),
    decode_head=dict(num_classes=num_classes,
                     loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
custom_hooks = _base_.custom_hooks + [dict(type='EoMTMaskAnnealingHook')]
train_dataloader = dict(batch_size=2)
max_iters = 20000
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05), clip_grad=dict(_delete_=True, max_norm=0.01, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=1000, end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=2000)
default_hooks = dict(checkpoint=dict(interval=2000))
