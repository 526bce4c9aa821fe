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


def test_the_main_config_exists():
    assert osp.join(ROOT, 'configs', 'dinov2_lora_voc.py') in TOP_LEVEL


@pytest.mark.parametrize('path', TOP_LEVEL, ids=lambda p: osp.relpath(p, ROOT))
def test_config_builds_its_model(path):
    cfg = Config.fromfile(path)  # runs custom_imports: dinolora_mmseg registers itself
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    is_dinov2 = cfg.model.backbone.type == 'DINOv2'
    if is_dinov2:
        cfg.model.backbone.pretrained = None  # no downloads in tests
    # Meta tensors build ViT-L/g without memory; MMSeg's ViT needs real ones.
    with torch.device('meta' if is_dinov2 else 'cpu'):
        model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert type(backbone).__name__ in ('DINOv2', 'LoRABackbone')
    assert all('.lora_' in n for n, p in backbone.named_parameters() if p.requires_grad)
    lora = cfg.model.backbone.get('lora')
    assert any('.lora_' in n for n, _ in backbone.named_parameters()) == (lora is not None)
    classes = 150 if 'ade20k' in path else 21
    assert model.decode_head.num_classes == classes
    crop = next(t['crop_size'] for t in cfg.train_dataloader.dataset.pipeline
                if t['type'] == 'RandomCrop')
    if 'upernet' not in path:  # the mixing examples keep MMSeg's pipelines and 512 crops
        assert crop[0] % 14 == 0 and crop[1] % 14 == 0
        for loader in (cfg.train_dataloader, cfg.test_dataloader):
            checks = [t for t in loader.dataset.pipeline if t['type'] == 'CheckSegMap']
            assert [t['num_classes'] for t in checks] == [classes]
    assert 'TrainableParamsHook' in [h['type'] for h in cfg.custom_hooks]
    assert 'WeightsOnlyCheckpointHook' in [h['type'] for h in cfg.custom_hooks]
    assert 'FiniteLossHook' in [h['type'] for h in cfg.custom_hooks]
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'


def pads_to_multiples_of(preprocessor: dict, patch: int) -> bool:
    """Whether ``SegDataPreProcessor`` settings pad every input to multiples of ``patch``."""
    size, divisor = preprocessor.get('size'), preprocessor.get('size_divisor')
    if size is not None:
        return size[0] % patch == 0 and size[1] % patch == 0
    return divisor is not None and divisor % patch == 0


@pytest.mark.parametrize('path', [c for c in TOP_LEVEL if osp.basename(c).startswith('dinov2')],
                         ids=lambda p: osp.relpath(p, ROOT))
def test_dinov2_inputs_are_padded_by_the_preprocessor(path):
    """The segmentor crops the preprocessor's padding off the predictions; padding left to
    the backbone would stretch them (tests/models/test_segmentor_padding.py)."""
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type == 'DINOv2'
    preprocessor = cfg.model.data_preprocessor
    assert pads_to_multiples_of(preprocessor, 14)
    assert pads_to_multiples_of(preprocessor.get('test_cfg') or {}, 14)
