# dinov2_lora_mask2former_ade20k.py with a spatial prior, as ViT-Adapter gives its ViT: a
# small convolutional stem on the image (64/128/256/256 channels at strides 4/8/16/32,
# SyncBN, 1.0 M parameters) that trains with the adapters while the ViT stays frozen;
# ViTFPN adds its maps to the pyramid levels through 1x1 convolutions that start at zero.
_base_ = './dinov2_lora_mask2former_ade20k.py'
model = dict(
    backbone=dict(spatial_prior=dict(channels=64, norm_cfg=dict(type='SyncBN'))),
    neck=dict(prior_channels=(64, 128, 256, 256)))
