# LoRA on another backbone: MMSeg's own ViT-B/16 + MLN + UPerNet ADE20k config with the
# ViT frozen and LoRA (rank 8) on its FFN layers. MMSeg's ViT attends through torch's
# nn.MultiheadAttention, whose projections are not called as nn.Linear modules (no
# adapter can hook in); mmpretrain's ViT has them as 'attn.qkv' and 'attn.proj':
# type='mmpretrain.VisionTransformer'.
# The ViT weights load as in the stock config (converted timm file, see MMSeg's docs).
_base_ = 'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py'
custom_imports = dict(imports=['dinolora_mmseg'], allow_failed_imports=False)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='LoRABackbone',
        backbone=dict(
            type='VisionTransformer',
            img_size=(512, 512),
            patch_size=16,
            embed_dims=768,
            num_layers=12,
            num_heads=12,
            mlp_ratio=4,
            out_indices=(2, 5, 8, 11),
            with_cls_token=True,
            norm_cfg=dict(type='LN', eps=1e-6),
            act_cfg=dict(type='GELU'),
            interpolate_mode='bicubic',
            pretrained='pretrain/vit_base_patch16_224.pth'),
        lora=dict(rank=8, alpha=8, dropout=0.0,
                  targets=['ffn.layers.0.0', 'ffn.layers.1'])))
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(type='WeightsOnlyCheckpointHook'),
    dict(type='FiniteLossHook'),
    dict(type='PretrainedRecordHook'),
]
