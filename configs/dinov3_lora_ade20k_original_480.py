# dinov3_lora_ade20k.py with the original DINOv2-LoRA project's input handling for DINOv3,
# for its output/dinov3/large_ade20k_lora.pt imported by
# tools/model_converters/dinov2_finetune2mmseg.py: RGB scaled to [0, 1] (no ImageNet
# mean/std) and resized to 480 x 480 for testing, so the model predicts what the original
# predicts. Training keeps dinov3_lora_ade20k.py's crops and schedule.
_base_ = [
    './_base_/models/dinov3_lora_linear.py', './_base_/datasets/ade20k_original_480.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/default_runtime.py', './_base_/schedules/adamw_40k.py'
]
data_preprocessor = dict(mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0])
model = dict(data_preprocessor=data_preprocessor, decode_head=dict(num_classes=150))
