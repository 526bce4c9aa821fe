# Mask2Former on DINOv3 ViT-L/16 with LoRA (rank 3, q and v), ADE20k (150 classes):
# dinov2_lora_mask2former_ade20k.py with the backbone swapped. ViTFPN reads blocks
# 5/12/18/24 (those the DINOv3 paper uses for ViT-L) at stride 16; crops are MMSeg's
# 512 x 512, the 32 x 32 patch grid, and test images are padded to multiples of 16.
# The official weights come with personal download links (DINOv3 License): request them
# at https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ and put the
# file under checkpoints/ (see README, "Backbones").
_base_ = './dinov2_lora_mask2former_ade20k.py'
crop_size = (512, 512)
scale = (2048, 512)
data_preprocessor = dict(size=crop_size, test_cfg=dict(size_divisor=16))
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='DINOv3',
        arch='large',
        out_indices=(4, 11, 17, 23),
        pretrained='checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth',
        frozen=True,
        lora=dict(rank=3, alpha=3, dropout=0.0, targets=('q', 'v'))),
    neck=dict(patch_size=16))
resized = dict(
    RandomChoiceResize=dict(scales=[int(scale[1] * x * 0.1) for x in range(5, 21)],
                            max_size=scale[0]),
    RandomCrop=dict(crop_size=crop_size),
    Resize=dict(scale=scale))
train_pipeline = [dict(t, **resized.get(t.type, {})) for t in _base_.train_pipeline]
test_pipeline = [dict(t, **resized.get(t.type, {})) for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
