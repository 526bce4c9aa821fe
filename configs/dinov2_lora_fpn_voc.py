# LoRA + FPN on Pascal VOC 2012: DINOv2 ViT-L/14-reg4 with LoRA (rank 3, q and v),
# blocks 6/12/18/24 -> ViTFPN (strides 4-32) -> Semantic FPN head.
_base_ = [
    './_base_/models/dinov2_lora_fpn.py', './_base_/datasets/voc12_518.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/default_runtime.py', './_base_/schedules/adamw_20k.py'
]
model = dict(decode_head=dict(num_classes=21))
