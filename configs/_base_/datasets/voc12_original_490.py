# voc12_518.py tested as the original DINOv2-LoRA project tested: each image resized to
# 490 x 490 (bilinear, aspect ratio not kept; its default --img_dim), predictions resized
# back to the image's own size for the metric. Training keeps voc12_518.py's pipeline.
_base_ = './voc12_518.py'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(490, 490), keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMap', num_classes=21),
    dict(type='PackSegInputs')
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
