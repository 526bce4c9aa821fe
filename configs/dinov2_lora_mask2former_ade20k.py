# Mask2Former on DINOv2 ViT-L/14-reg4 with LoRA (rank 3, q and v), ADE20k (150 classes):
# MMSeg's own Mask2Former ADE20k config (2 images on each of 8 processes, AdamW 1e-4 with
# gradient clipping, 160k iterations) with its ResNet-50 replaced. ViTFPN turns blocks
# 6/12/18/24 into the stride 4-32 pyramid that the deformable-attention pixel decoder
# reads, with GroupNorm as the pixel decoder has (2 images per process are too few for
# BatchNorm). Crops are 518 x 518, the 37 x 37 patch grid; test images are resized to a
# short side of 518 px and padded to multiples of 14 by the data preprocessor. The head is
# MMSeg's Mask2FormerHead with its deformable attention in float32 under --amp (mmcv's CUDA
# kernels have no bfloat16).
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
    './_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmdet.models', 'dinolora_mmseg'], allow_failed_imports=False)
crop_size = (518, 518)
scale = (2072, 518)
data_preprocessor = dict(size=crop_size, test_cfg=dict(size_divisor=14))
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='DINOv2',
        arch='large',
        num_register_tokens=4,
        out_indices=(5, 11, 17, 23),
        pretrained='https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/'
        'dinov2_vitl14_reg4_pretrain.pth',
        frozen=True,
        lora=dict(rank=3, alpha=3, dropout=0.0, targets=('q', 'v'))),
    neck=dict(type='ViTFPN', in_channels=1024, out_channels=256, num_inputs=4,
              norm_cfg=dict(type='GN', num_groups=32)),
    decode_head=dict(type='Float32DeformAttnMask2FormerHead', in_channels=[256] * 4))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=150),
    dict(type='RandomChoiceResize', scales=[int(scale[1] * x * 0.1) for x in range(5, 21)],
         resize_type='ResizeShortestEdge', max_size=scale[0]),
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
# The adapters start at zero and learn from scratch: the full learning rate, not the
# tenth MMSeg gives a pretrained backbone that trains as a whole.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=1.0))))
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
