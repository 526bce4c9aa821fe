# MMSeg's Pascal VOC 2012 settings (1,464 train / 1,449 val images, 21 classes) with
# 512 x 512 crops: the 32 x 32 patch grid of DINOv3. Test images are resized to a short
# side of 512 px and padded to multiples of 16 by the model's data preprocessor.
_base_ = './voc12_518.py'
crop_size = (512, 512)
scale = (2048, 512)
resized = dict(RandomCrop=dict(crop_size=crop_size), RandomResize=dict(scale=scale),
               Resize=dict(scale=scale))
train_pipeline = [dict(t, **resized.get(t.type, {})) for t in _base_.train_pipeline]
test_pipeline = [dict(t, **resized.get(t.type, {})) for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
