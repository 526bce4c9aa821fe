# High-resolution training on little memory: dinov2_lora_ade20k.py with 896 x 896 crops
# (a 64 x 64 patch grid), bfloat16 autocast (BF16OptimWrapper: CPU and GPU; weights,
# gradients and optimizer state stay float32) and activation checkpointing of the
# backbone (each block keeps its input and attention output, recomputes the rest).
# Measured on ViT-S at 896 px with tools/benchmark.py: see the README's performance
# section. Test images are resized to a short side of 896 px.
_base_ = './dinov2_lora_ade20k.py'
crop_size = (896, 896)
scale = (3584, 896)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=150),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=150),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
model = dict(backbone=dict(with_cp=True))
optim_wrapper = dict(type='BF16OptimWrapper')
