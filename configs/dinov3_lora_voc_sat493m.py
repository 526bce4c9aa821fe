# dinov3_lora_voc.py with the ViT-L/16 pretrained on satellite images (SAT-493M), which
# expects its own normalisation constants: mean (0.430, 0.411, 0.296) and std
# (0.213, 0.156, 0.143) of RGB in [0, 1], here x 255. For aerial or satellite data,
# swap the dataset settings and keep the model's.
_base_ = './dinov3_lora_voc.py'
model = dict(
    data_preprocessor=dict(mean=[109.65, 104.805, 75.48], std=[54.315, 39.78, 36.465]),
    backbone=dict(pretrained='checkpoints/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth'))
