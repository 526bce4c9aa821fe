# DINOv2 ViT-L/14 with 4 registers, frozen, LoRA rank 3 on the query and value thirds
# of every attention's qkv projection, and a 1x1-convolution head on the final-normed
# patch tokens of the last block: the model of the original work.
custom_imports = dict(imports=['dinolora_mmseg'], allow_failed_imports=False)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    # Pad to multiples of the patch size here, so the padding is cropped off the
    # predictions again (the backbone would otherwise pad itself).
    size_divisor=14,
    test_cfg=dict(size_divisor=14))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='DINOv2',
        arch='large',
        num_register_tokens=4,
        out_indices=-1,
        final_norm=True,
        pretrained='https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/'
        'dinov2_vitl14_reg4_pretrain.pth',
        frozen=True,
        lora=dict(rank=3, alpha=3, dropout=0.0, targets=('q', 'v'))),
    decode_head=dict(
        type='LinearHead',
        in_channels=1024,
        num_classes=21,
        norm_cfg=None,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(type='WeightsOnlyCheckpointHook'),
    dict(type='FiniteLossHook'),
    dict(type='PretrainedRecordHook'),
]
# Frozen weights from the pretrained file are not broadcast when DDP wraps the model.
model_wrapper_cfg = dict(type='mmseg.PretrainedWeightsDDP')
