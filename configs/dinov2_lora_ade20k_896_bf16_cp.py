# High-resolution training on little memory: dinov2_lora_ade20k.py with 896 x 896 crops
# (a 64 x 64 patch grid), bfloat16 autocast (BF16OptimWrapper: CPU and GPU; weights,
# gradients and optimizer state stay float32) and activation checkpointing of the
# backbone (each block keeps its input and attention output, recomputes the rest).
# Measured on ViT-S at 896 px with tools/analysis_tools/benchmark.py: see the README's performance
# section. The pipelines are the base config's with the sizes scaled to 896 px; test
# images are resized to a short side of 896 px.
_base_ = './dinov2_lora_ade20k.py'
crop_size = (896, 896)
scale = (3584, 896)
resized = dict(RandomCrop=dict(crop_size=crop_size), RandomResize=dict(scale=scale),
               Resize=dict(scale=scale))
train_pipeline = [dict(t, **resized.get(t.type, {})) for t in _base_.train_pipeline]
test_pipeline = [dict(t, **resized.get(t.type, {})) for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
model = dict(backbone=dict(with_cp=True))
optim_wrapper = dict(type='BF16OptimWrapper')
