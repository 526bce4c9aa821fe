# Mixing example: MMSeg's own UPerNet ADE20k config with its ResNet-50 swapped for
# DINOv2 ViT-L/14-reg4 with LoRA. ViTFPN turns four blocks into the stride 4-32
# pyramid UPerHead expects; dataset, schedule (SGD, 80k) and heads stay MMSeg's.
# The stock 512 x 512 crops are not multiples of 14: the data preprocessor pads every
# batch to multiples of 14 instead of to 512 (train and test), so that predictions are
# cropped back to the image instead of being resized from the padded one.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['dinolora_mmseg'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=None, size_divisor=14, test_cfg=dict(size_divisor=14))
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DINOv2',
        arch='large',
        num_register_tokens=4,
        out_indices=(5, 11, 17, 23),
        pretrained='https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/'
        'dinov2_vitl14_reg4_pretrain.pth',
        lora=dict(rank=3, alpha=3, targets=('q', 'v'))),
    neck=dict(type='ViTFPN', in_channels=1024, out_channels=256, num_inputs=4,
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
