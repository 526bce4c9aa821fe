# EoMT on DINOv3 ViT-L/16 with LoRA, ADE20k, 512 x 512 crops (the 32 x 32 patch grid):
# dinov2_lora_eomt_ade20k.py with the backbone swapped and the paper's DINOv3 ADE20k
# recipe (tue-mps/eomt, configs/dinov3/ade20k/semantic/eomt_large_512.yaml): 16 epochs =
# 20224 iterations of 16 images, AdamW 2e-4, a 3000-iteration warm-up, and mask annealing
# that starts at once in the first query block. Masks at stride 16 / 4 = 4. The official
# weights come with personal download links (DINOv3 License): put the file under
# checkpoints/ (see README, "Backbones").
_base_ = './dinov2_lora_eomt_ade20k.py'
crop_size = (512, 512)
scale = (2048, 512)
data_preprocessor = dict(size_divisor=16, test_cfg=dict(size_divisor=16))
model = dict(
    data_preprocessor=data_preprocessor,
    mask_annealing=dict(start_iters=[0, 6520, 9780, 13040],
                        end_iters=[3000, 9780, 13040, 16300], power=0.9),
    backbone=dict(
        _delete_=True,
        type='DINOv3',
        arch='large',
        out_indices=-1,
        pretrained='checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth',
        frozen=True,
        lora=dict(rank=8, alpha=8, dropout=0.0, targets=('qkv', 'proj', 'fc1', 'fc2'))))
resized = dict(RandomResize=dict(scale=scale), RandomCrop=dict(crop_size=crop_size),
               Resize=dict(scale=scale))
train_pipeline = [dict(t, **resized.get(t.type, {})) for t in _base_.train_pipeline]
test_pipeline = [dict(t, **resized.get(t.type, {})) for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
max_iters = 20224
optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=3000),
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=3000, end=max_iters)
]
train_cfg = dict(max_iters=max_iters)
