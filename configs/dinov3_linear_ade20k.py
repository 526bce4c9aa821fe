# The official DINOv3 linear segmentation protocol on ADE20k, as the DINOv3 repository's
# dinov3/eval/segmentation/configs/config-ade20k-linear-training.yaml states it: the
# frozen backbone's last block, final-normed patch tokens (no class token), dropout 0.1,
# BatchNorm and a 1x1 convolution; AdamW lr 1e-3, weight decay 1e-3, betas (0.9, 0.999),
# no gradient clipping, 1,500 linear warm-up iterations from 1e-6 x lr, then cosine decay
# to 0 at 40k iterations; 2 images per process on 8 processes (16 in all); training on
# the short side resized to 512 x [0.5, 2.0], 512 x 512 crops, flips and photometric
# distortion; testing on the short side resized to 512, sliding 512 x 512 windows with a
# stride of 341. Float32 throughout. (The official head applies its dropout before the
# BatchNorm, MMSeg's after it.)
_base_ = [
    './_base_/models/dinov3_lora_linear.py', './_base_/datasets/ade20k_512.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/default_runtime.py', './_base_/schedules/adamw_40k.py'
]
model = dict(
    backbone=dict(lora=None),
    decode_head=dict(
        num_classes=150,
        norm_cfg=dict(_delete_=True, type='SyncBN', requires_grad=True),
        dropout_ratio=0.1),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-3), clip_grad=None)
max_iters = 40000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=1500, end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=5000)
default_hooks = dict(checkpoint=dict(interval=5000))
