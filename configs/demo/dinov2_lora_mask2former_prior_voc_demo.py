# dinov2_lora_mask2former_voc_demo.py with a spatial prior: a small convolutional stem on
# the image (64/128/256/256 channels at strides 4/8/16/32, 1.0 M parameters) whose maps
# ViTFPN adds to its levels, for the detail a plain ViT's 14-pixel patches do not see.
_base_ = './dinov2_lora_mask2former_voc_demo.py'
prior = dict(channels=64, norm_cfg=dict(type='BN'))
model = dict(
    backbone=dict(spatial_prior=prior),
    neck=dict(prior_channels=(64, 128, 256, 256)))
