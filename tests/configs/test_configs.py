import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))
TOP_LEVEL = [c for c in CONFIGS if '_base_' not in c]
PATCH_SIZES = dict(DINOv2=14, DINOv3=16)


def test_the_main_config_exists():
    assert osp.join(ROOT, 'configs', 'dinov2_lora_voc.py') in TOP_LEVEL


@pytest.mark.parametrize('path', TOP_LEVEL, ids=lambda p: osp.relpath(p, ROOT))
def test_config_builds_its_model(path):
    cfg = Config.fromfile(path)  # runs custom_imports: dinolora_mmseg registers itself
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    is_dino = cfg.model.backbone.type in PATCH_SIZES
    if is_dino:
        cfg.model.backbone.pretrained = None  # no downloads in tests
    # Meta tensors build ViT-L/g/7B without memory; MMSeg's ViT needs real ones.
    with torch.device('meta' if is_dino else 'cpu'):
        model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert type(backbone).__name__ in ('DINOv2', 'DINOv3', 'LoRABackbone')
    # What trains in a backbone: LoRA adapters and a spatial prior, never a frozen weight.
    assert all('.lora_' in n or n.startswith('spatial_prior.')
               for n, p in backbone.named_parameters() if p.requires_grad)
    prior = cfg.model.backbone.get('spatial_prior')
    if prior is not None:
        assert tuple(cfg.model.neck.prior_channels) == backbone.spatial_prior.out_channels
    lora = cfg.model.backbone.get('lora')
    assert any('.lora_' in n for n, _ in backbone.named_parameters()) == (lora is not None)
    classes = 150 if 'ade20k' in path else 21
    assert model.decode_head.num_classes == classes
    crop = next(t['crop_size'] for t in cfg.train_dataloader.dataset.pipeline
                if t['type'] == 'RandomCrop')
    if 'upernet' not in path:  # the mixing examples keep MMSeg's pipelines and 512 crops
        patch = PATCH_SIZES[cfg.model.backbone.type]
        assert crop[0] % patch == 0 and crop[1] % patch == 0
        for loader in (cfg.train_dataloader, cfg.test_dataloader):
            checks = [t for t in loader.dataset.pipeline if t['type'] == 'CheckSegMap']
            assert [t['num_classes'] for t in checks] == [classes]
    assert 'TrainableParamsHook' in [h['type'] for h in cfg.custom_hooks]
    assert 'WeightsOnlyCheckpointHook' in [h['type'] for h in cfg.custom_hooks]
    assert 'FiniteLossHook' in [h['type'] for h in cfg.custom_hooks]
    assert 'PretrainedRecordHook' in [h['type'] for h in cfg.custom_hooks]
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'


def pads_to_multiples_of(preprocessor: dict, patch: int) -> bool:
    """Whether ``SegDataPreProcessor`` settings pad every input to multiples of ``patch``."""
    size, divisor = preprocessor.get('size'), preprocessor.get('size_divisor')
    if size is not None:
        return size[0] % patch == 0 and size[1] % patch == 0
    return divisor is not None and divisor % patch == 0


@pytest.mark.parametrize('path', [c for c in TOP_LEVEL if osp.basename(c).startswith('dinov')],
                         ids=lambda p: osp.relpath(p, ROOT))
def test_dino_inputs_are_padded_by_the_preprocessor(path):
    """The segmentor crops the preprocessor's padding off the predictions; padding left to
    the backbone would stretch them (tests/models/test_segmentor_padding.py)."""
    cfg = Config.fromfile(path)
    family = osp.basename(path)[:6].replace('dinov', 'DINOv')
    assert cfg.model.backbone.type == family
    preprocessor = cfg.model.data_preprocessor
    assert pads_to_multiples_of(preprocessor, PATCH_SIZES[family])
    assert pads_to_multiples_of(preprocessor.get('test_cfg') or {}, PATCH_SIZES[family])


@pytest.mark.parametrize('name', ['dinov3_lora_voc.py', 'dinov3_lora_ade20k.py'])
def test_dinov3_lora_configs(name):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.lora.rank, backbone.lora.targets) == (
        'DINOv3', 'large', 3, ('q', 'v'))
    assert backbone.pretrained.startswith('checkpoints/dinov3_vitl16_pretrain_')
    assert cfg.model.decode_head.type == 'LinearHead'
    crop = next(t['crop_size'] for t in cfg.train_dataloader.dataset.pipeline
                if t['type'] == 'RandomCrop')
    assert crop == (512, 512)  # the 32 x 32 patch grid


def test_dinov3_linear_protocol_is_the_official_one():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'dinov3_linear_ade20k.py'))
    assert cfg.model.backbone.lora is None and cfg.model.backbone.out_indices == -1
    head = cfg.model.decode_head
    assert (head.norm_cfg.type, head.dropout_ratio) == ('SyncBN', 0.1)
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-3, 1e-3)
    warmup, decay = cfg.param_scheduler
    assert (warmup.start_factor, warmup.end, decay.type, decay.end) == (
        1e-6, 1500, 'CosineAnnealingLR', 40000)


def test_sat493m_variant_uses_its_normalisation():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'dinov3_lora_voc_sat493m.py'))
    preprocessor = cfg.model.data_preprocessor
    assert [round(m / 255, 3) for m in preprocessor.mean] == [0.430, 0.411, 0.296]
    assert [round(s / 255, 3) for s in preprocessor.std] == [0.213, 0.156, 0.143]
    assert 'sat493m' in cfg.model.backbone.pretrained
