# Mixing example: MMSeg's own UPerNet ADE20k config with its ResNet-50 swapped for
# DINOv3 ViT-L/16 with LoRA. ViTFPN turns four blocks (those the DINOv3 paper uses for
# ViT-L) into the stride 4-32 pyramid UPerHead expects; dataset, schedule (SGD, 80k)
# and heads stay MMSeg's. The stock 512 x 512 crops are the 32 x 32 patch grid; test
# images are padded to multiples of 16, so that predictions are cropped back to the
# image instead of being resized from a padded one.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['dinolora_mmseg'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=None, size_divisor=16, test_cfg=dict(size_divisor=16))
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DINOv3',
        arch='large',
        out_indices=(4, 11, 17, 23),
        pretrained='checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth',
        lora=dict(rank=3, alpha=3, targets=('q', 'v'))),
    neck=dict(type='ViTFPN', in_channels=1024, out_channels=256, num_inputs=4, patch_size=16,
              norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[256, 256, 256, 256]),
    auxiliary_head=dict(in_channels=256))
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(type='WeightsOnlyCheckpointHook'),
    dict(type='FiniteLossHook'),
    dict(type='PretrainedRecordHook'),
]
# Frozen weights from the pretrained file are not broadcast when DDP wraps the model.
model_wrapper_cfg = dict(type='mmseg.PretrainedWeightsDDP')
