# dinov3_lora_mask2former_ade20k.py with the spatial prior of
# dinov2_lora_mask2former_prior_ade20k.py.
_base_ = './dinov3_lora_mask2former_ade20k.py'
model = dict(
    backbone=dict(spatial_prior=dict(channels=64, norm_cfg=dict(type='SyncBN'))),
    neck=dict(prior_channels=(64, 128, 256, 256)))
