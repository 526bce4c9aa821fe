# DINOv3 ViT-L/16 (frozen), LoRA rank 3 on q and v, a 1x1-convolution head, Pascal VOC
# 2012 at 512 x 512 (a 32 x 32 patch grid), AdamW 3e-4 for 20k iterations with 4 images
# per process (16 in all on 4 processes).
# Other sizes without editing this file (see README, "Backbones"):
#   --cfg-options model.backbone.arch=small model.decode_head.in_channels=384 \
#       model.backbone.pretrained=checkpoints/dinov3_vits16_pretrain_lvd1689m-08c60483.pth
_base_ = [
    './_base_/models/dinov3_lora_linear.py', './_base_/datasets/voc12_512.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/default_runtime.py', './_base_/schedules/adamw_20k.py'
]
model = dict(decode_head=dict(num_classes=21))
