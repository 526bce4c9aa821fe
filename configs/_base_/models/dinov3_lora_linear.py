# DINOv3 ViT-L/16 (web images, LVD-1689M), frozen, LoRA rank 3 on the query and value
# thirds of every attention's qkv projection, and a 1x1-convolution head on the
# final-normed patch tokens of the last block.
# The official weights come with personal download links (DINOv3 License): request them
# at https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ and put the
# file under checkpoints/ (see README, "Backbones").
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
    size_divisor=16,
    test_cfg=dict(size_divisor=16))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='DINOv3',
        arch='large',
        out_indices=-1,
        final_norm=True,
        pretrained='checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth',
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
