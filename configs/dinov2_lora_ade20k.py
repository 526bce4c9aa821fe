# ADE20k (150 classes), DINOv2 ViT-L/14-reg4, LoRA (rank 3, q and v) + 1x1-convolution head;
# 518 x 518 crops, AdamW 3e-4 for 40k iterations with 4 images per process.
_base_ = [
    './_base_/models/dinov2_lora_linear.py', './_base_/datasets/ade20k_518.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/default_runtime.py', './_base_/schedules/adamw_40k.py'
]
model = dict(decode_head=dict(num_classes=150))
