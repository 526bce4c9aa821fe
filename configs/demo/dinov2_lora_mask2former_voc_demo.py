# dinov2_lora_mask2former_voc.py shrunk for a CPU: ViT-S/14-reg4 (random weights unless a
# pretrained file is passed) with LoRA rank 3 on q and v, a 64-channel ViTFPN and a tiny
# Mask2Former (16 queries, 1 pixel-decoder and 3 transformer-decoder layers), the
# built-in demo data of tools/misc/make_demo_data.py (VOC layout, 168 x 224 images) and
# 300 iterations.
_base_ = '../dinov2_lora_mask2former_voc.py'
data_root = 'data/demo/VOCdevkit/VOC2012'
crop_size = (168, 168)
channels = 64
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
data_preprocessor = dict(size=crop_size, test_cfg=dict(size_divisor=14))
attention = dict(embed_dims=channels, num_heads=4)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(arch='small', out_indices=(2, 5, 8, 11), pretrained=None),
    neck=dict(in_channels=384, out_channels=channels),
    decode_head=dict(
        in_channels=[channels] * 4,
        feat_channels=channels,
        out_channels=channels,
        num_queries=16,
        pixel_decoder=dict(
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=channels, num_heads=4),
                    ffn_cfg=dict(embed_dims=channels, feedforward_channels=4 * channels))),
            positional_encoding=dict(num_feats=channels // 2)),
        positional_encoding=dict(num_feats=channels // 2),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=attention,
                cross_attn_cfg=attention,
                ffn_cfg=dict(embed_dims=channels, feedforward_channels=4 * channels))),
        train_cfg=dict(num_points=(crop_size[0] // 4)**2)))
max_iters = 300
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=30, end=max_iters)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1, save_best=None))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
