# MMSeg's Pascal VOC 2012 settings (1,464 train / 1,449 val images, 21 classes) with
# 518 x 518 crops: the 37 x 37 patch grid DINOv2 was trained at. Test images are
# resized to a short side of 518 px and padded to multiples of 14 by the model's
# data preprocessor.
_base_ = 'mmseg::_base_/datasets/pascal_voc12.py'
crop_size = (518, 518)
scale = (2072, 518)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMap', num_classes=21),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMap', num_classes=21),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
