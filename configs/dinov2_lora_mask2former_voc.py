# Mask2Former on DINOv2 ViT-L/14-reg4 with LoRA (rank 3, q and v), Pascal VOC 2012 (21
# classes): dinov2_lora_mask2former_ade20k.py with the data of dinov2_lora_voc.py (518 x
# 518 crops) and its 20k iterations of 16 images (2 on each of 8 processes here).
_base_ = './dinov2_lora_mask2former_ade20k.py'
num_classes = 21
crop_size = (518, 518)
scale = (2072, 518)
model = dict(
    decode_head=dict(num_classes=num_classes,
                     loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMap', num_classes=num_classes),
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
    dict(type='CheckSegMap', num_classes=num_classes),
    dict(type='PackSegInputs')
]
data_root = 'data/VOCdevkit/VOC2012'
data_prefix = dict(img_path='JPEGImages', seg_map_path='SegmentationClass')
train_dataloader = dict(dataset=dict(
    _delete_=True, type='PascalVOCDataset', data_root=data_root, data_prefix=data_prefix,
    ann_file='ImageSets/Segmentation/train.txt', pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    _delete_=True, type='PascalVOCDataset', data_root=data_root, data_prefix=data_prefix,
    ann_file='ImageSets/Segmentation/val.txt', pipeline=test_pipeline))
test_dataloader = val_dataloader
max_iters = 20000
param_scheduler = [
    dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=2000)
default_hooks = dict(checkpoint=dict(interval=2000))
