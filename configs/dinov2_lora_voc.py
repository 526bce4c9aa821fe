# The main config: DINOv2 ViT-L/14 with 4 registers (frozen), LoRA rank 3 on q and v,
# a 1x1-convolution head, Pascal VOC 2012 at 518 x 518, AdamW 3e-4 for 20k iterations
# with 4 images per process (16 in all on 4 processes).
# Other sizes without editing this file (see README, "Model sizes"):
#   --cfg-options model.backbone.arch=small model.decode_head.in_channels=384 \
#                 model.backbone.pretrained=checkpoints/dinov2_vits14_reg4_pretrain.pth
_base_ = [
    './_base_/models/dinov2_lora_linear.py', './_base_/datasets/voc12_518.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/default_runtime.py', './_base_/schedules/adamw_20k.py'
]
model = dict(decode_head=dict(num_classes=21))
