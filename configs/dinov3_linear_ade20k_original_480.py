# dinov3_lora_ade20k_original_480.py without LoRA (the original DINOv2-LoRA project's main.py
# without --use_lora: only the 1x1-convolution head trained), for such a file imported by
# tools/model_converters/dinov2_finetune2mmseg.py.
_base_ = './dinov3_lora_ade20k_original_480.py'
model = dict(backbone=dict(lora=None))
