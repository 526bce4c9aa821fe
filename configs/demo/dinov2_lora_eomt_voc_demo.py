# dinov2_lora_eomt_voc.py shrunk for a CPU: ViT-S/14-reg4 (random weights unless a
# pretrained file is passed) with LoRA rank 8 on every linear layer, 16 queries in the
# last 3 blocks (the paper's number for ViT-S), the built-in demo data of
# tools/misc/make_demo_data.py (VOC layout, 168 x 224 images) and 300 iterations. Mask
# annealing on the same sixths of the schedule: starts 50/100/150, ends 100/150/200,
# then 100 iterations without masks.
_base_ = '../dinov2_lora_eomt_voc.py'
data_root = 'data/demo/VOCdevkit/VOC2012'
crop_size = (168, 168)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMap', num_classes=21),
    dict(type='RandomResize', scale=(224, 168), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 168), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckSegMap', num_classes=21),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
data_preprocessor = dict(size=crop_size, size_divisor=None, test_cfg=dict(size_divisor=14))
model = dict(
    data_preprocessor=data_preprocessor,
    num_blocks=3,
    mask_annealing=dict(start_iters=[50, 100, 150], end_iters=[100, 150, 200], power=0.9),
    backbone=dict(arch='small', pretrained=None),
    decode_head=dict(embed_dims=384, num_queries=16,
                     train_cfg=dict(num_points=(crop_size[0] // 4)**2)))
max_iters = 300
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=30, end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1, save_best=None))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
