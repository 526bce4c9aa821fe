# EoMT (encoder-only mask transformer, Kerssies et al., CVPR 2025) on DINOv2 ViT-L/14 with
# 4 registers, frozen: 100 learnable queries join the tokens for the last 4 blocks; class
# and mask logits come from the queries (masks at stride 14 / 4 = 3.5 after two learned
# 2x upscalings of the patch tokens). What trains: LoRA rank 8 on every linear layer of
# every block (qkv, proj, fc1, fc2; the blocks now also decode, so more than the q/v of
# the linear configs) and the whole head (queries, upscaling, mask MLP, class layer).
# Losses, Hungarian matching and point sampling are MMSeg's Mask2Former settings (class
# weight 2 with no-object 0.1, mask BCE 5, dice 5, 12544 points). mask_annealing is set by
# the dataset configs, in iterations of their schedules, with EoMTMaskAnnealingHook.
custom_imports = dict(imports=['mmdet.models', 'dinolora_mmseg'], allow_failed_imports=False)
num_classes = 150
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=14,
    test_cfg=dict(size_divisor=14))
model = dict(
    type='EoMT',
    data_preprocessor=data_preprocessor,
    num_blocks=4,
    backbone=dict(
        type='DINOv2',
        arch='large',
        num_register_tokens=4,
        out_indices=-1,
        pretrained='https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/'
        'dinov2_vitl14_reg4_pretrain.pth',
        frozen=True,
        lora=dict(rank=8, alpha=8, dropout=0.0, targets=('qkv', 'proj', 'fc1', 'fc2'))),
    decode_head=dict(
        type='EoMTHead',
        num_classes=num_classes,
        embed_dims=1024,
        num_queries=100,
        num_upscale=2,
        align_corners=False,
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                      reduction='mean', class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                       loss_weight=5.0),
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True,
                       reduction='mean', naive_dice=True, eps=1.0, loss_weight=5.0),
        train_cfg=dict(
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='mmdet.HungarianAssigner',
                match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=2.0),
                    dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                    dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0)
                ]),
            sampler=dict(type='mmdet.MaskPseudoSampler'))),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
