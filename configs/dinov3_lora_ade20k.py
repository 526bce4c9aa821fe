# ADE20k (150 classes), DINOv3 ViT-L/16, LoRA (rank 3, q and v) + 1x1-convolution head;
# 512 x 512 crops, AdamW 3e-4 for 40k iterations with 4 images per process.
_base_ = [
    './_base_/models/dinov3_lora_linear.py', './_base_/datasets/ade20k_512.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/default_runtime.py', './_base_/schedules/adamw_40k.py'
]
model = dict(decode_head=dict(num_classes=150))
