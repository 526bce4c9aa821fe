# DINOv2 ViT-L/14-reg4 with LoRA (rank 3, q and v), four evenly spaced blocks turned
# into a stride 4-32 feature pyramid by ViTFPN, and MMSeg's Semantic FPN head.
_base_ = './dinov2_lora_linear.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(out_indices=(5, 11, 17, 23)),
    neck=dict(type='ViTFPN', in_channels=1024, out_channels=256, num_inputs=4,
              norm_cfg=norm_cfg),
    decode_head=dict(
        _delete_=True,
        type='FPNHead',
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=128,
        dropout_ratio=0.1,
        num_classes=21,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)))
