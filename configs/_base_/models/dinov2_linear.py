# The linear probe: the frozen DINOv2 ViT-L/14-reg4 without LoRA and a 1x1-convolution
# head; only the head trains.
_base_ = './dinov2_lora_linear.py'
model = dict(backbone=dict(lora=None))
