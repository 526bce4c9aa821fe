# ade20k_512.py tested as the original DINOv2-LoRA project tested its DINOv3 models: each
# image resized to 480 x 480 (bilinear, aspect ratio not kept; its default --img_dim of 490
# lowered to a multiple of the 16-pixel patches, as its main.py does), predictions resized
# back to the image's own size for the metric. Training keeps ade20k_512.py's pipeline.
_base_ = './ade20k_512.py'
test_pipeline = [dict(t, scale=(480, 480), keep_ratio=False) if t.type == 'Resize' else t
                 for t in _base_.test_pipeline]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
