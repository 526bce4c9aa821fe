# MMSeg's ADE20k settings (20,210 train / 2,000 val images, 150 classes, label 0 =
# "other" ignored) with their own 512 x 512 crops, the 32 x 32 patch grid of DINOv3.
# Test images are resized to a short side of 512 px.
_base_ = './ade20k_518.py'
crop_size = (512, 512)
scale = (2048, 512)
resized = dict(RandomCrop=dict(crop_size=crop_size), RandomResize=dict(scale=scale),
               Resize=dict(scale=scale))
train_pipeline = [dict(t, **resized.get(t.type, {})) for t in _base_.train_pipeline]
test_pipeline = [dict(t, **resized.get(t.type, {})) for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
