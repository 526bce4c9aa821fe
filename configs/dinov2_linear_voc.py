# Linear probe on Pascal VOC 2012: frozen DINOv2 ViT-L/14-reg4 without LoRA and a 1x1
# convolution; only the head trains. Otherwise as dinov2_lora_voc.py.
_base_ = [
    './_base_/models/dinov2_linear.py', './_base_/datasets/voc12_518.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/default_runtime.py', './_base_/schedules/adamw_20k.py'
]
model = dict(decode_head=dict(num_classes=21))
