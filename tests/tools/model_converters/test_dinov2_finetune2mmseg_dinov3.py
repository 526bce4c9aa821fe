"""Importing the original project's DINOv3 files (its output/dinov3/*.pt), built here in
exactly their format: the imported model predicts what the original DINOv3 model predicts."""
import re

import cv2
import pytest
import skimage.data
import torch
from mmengine.config import Config
from mmseg.apis import inference_model, init_model
from mmseg.datasets import ADE20KDataset

from tests.helpers import official_dinov3_state_dict
from tests.tools.model_converters.original_project import (decided, import_weights,
                                                           original_file, original_logits)


def test_imported_dinov3_voc_model_predicts_what_the_original_predicts(
        tmp_path, monkeypatch, capsys):
    """A ViT-S/16 file from output/dinov3/ (DINOv3 assumed from the folder): MMSeg's Python
    API gives the original's logits at 480 x 480. (tools/test.py reads the same test
    pipeline from test_dataloader, checked below; it runs on an imported DINOv2 model.)"""
    pretrained = tmp_path / 'dinov3_vits16_pretrain_lvd1689m-08c60483.pth'
    backbone_state = official_dinov3_state_dict(384, 12, 6)
    torch.save(backbone_state, pretrained)
    src = tmp_path / 'output' / 'dinov3' / 'small_voc_lora.pt'
    src.parent.mkdir(parents=True)
    seed_state = original_file(src, seed=5)  # a seed whose labels vary over the photo
    config, checkpoint = tmp_path / 'imported.py', tmp_path / 'imported.pth'
    output = import_weights(monkeypatch, capsys, src, checkpoint, '--pretrained', pretrained)
    assert 'Assuming a DINOv3 file' in output
    assert 'DINOv3 ViT-small (12 blocks), LoRA rank 3, 21 classes (voc)' in output
    assert 'configs/dinov3_lora_voc_original_480.py' in output
    assert 'RGB / 255, 480 x 480' in output

    image = tmp_path / 'chelsea.jpg'
    cv2.imwrite(str(image), skimage.data.chelsea()[..., ::-1])  # 300 x 451 RGB photo
    expected = original_logits(image, backbone_state, seed_state, 'dinov3')
    labels, sure = expected.argmax(0), decided(expected)
    assert expected.shape == (21, 300, 451) and len(labels.unique()) >= 3

    model = init_model(str(config), str(checkpoint), device='cpu')
    assert type(model.backbone).__name__ == 'DINOv3'
    result = inference_model(model, str(image))
    assert (result.seg_logits.data - expected).abs().max() < 1e-4
    assert torch.equal(result.pred_sem_seg.data[0][sure], labels[sure])
    # the adapters matter far beyond that tolerance: a wrong mapping of them would show
    for name, param in model.backbone.named_parameters():
        if '.lora_B.' in name:
            param.data.zero_()
    assert (inference_model(model, str(image)).seg_logits.data - expected).abs().max() > 0.1


def test_imported_dinov3_ade20k_linear_model_predicts_what_the_original_predicts(
        tmp_path, monkeypatch, capsys):
    """A file without LoRA (the original's main.py without --use_lora), DINOv3 by option."""
    pretrained = tmp_path / 'vits16.pth'
    backbone_state = official_dinov3_state_dict(384, 12, 6, seed=1)
    torch.save(backbone_state, pretrained)
    seed_state = original_file(tmp_path / 'small_ade20k_no_lora.pt', rank=None, classes=150,
                               seed=1)
    output = import_weights(monkeypatch, capsys, tmp_path / 'small_ade20k_no_lora.pt',
                            tmp_path / 'imported.pth', '--pretrained', pretrained,
                            '--backbone', 'dinov3')
    assert 'Assuming' not in output
    assert 'DINOv3 ViT-small (12 blocks), no LoRA, 150 classes' in output
    assert 'configs/dinov3_linear_ade20k_original_480.py' in output
    image = tmp_path / 'astronaut.png'
    cv2.imwrite(str(image), cv2.resize(skimage.data.astronaut(), (333, 250))[..., ::-1])
    expected = original_logits(image, backbone_state, seed_state, 'dinov3')
    assert expected.shape == (150, 250, 333) and len(expected.argmax(0).unique()) >= 3

    model = init_model(str(tmp_path / 'imported.py'), str(tmp_path / 'imported.pth'),
                       device='cpu')
    assert model.dataset_meta['classes'] == ADE20KDataset.METAINFO['classes']
    assert not any('.lora_' in name for name, _ in model.named_parameters())
    result = inference_model(model, str(image))
    assert (result.seg_logits.data - expected).abs().max() < 1e-4


def test_written_dinov3_config_sets_size_rank_and_official_file(tmp_path, monkeypatch, capsys):
    original_file(tmp_path / 'base_ade20k_lora.pt', dim=768, rank=8, classes=150)
    output = import_weights(monkeypatch, capsys, tmp_path / 'base_ade20k_lora.pt',
                            tmp_path / 'out.pth', '--backbone', 'dinov3')
    assert 'DINOv3 ViT-base (12 blocks), LoRA rank 8, 150 classes (ade20k)' in output
    cfg = Config.fromfile(tmp_path / 'out.py')
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch) == ('DINOv3', 'base')
    assert backbone.lora == dict(rank=8, alpha=8, dropout=0.0, targets=('q', 'v'))
    # DINOv3 weights come with personal links: the official file name, under checkpoints/
    assert backbone.pretrained == 'checkpoints/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth'
    assert cfg.model.decode_head.in_channels == 768 and cfg.model.decode_head.num_classes == 150
    assert cfg.model.data_preprocessor.std == [255.0] * 3
    assert cfg.model.data_preprocessor.test_cfg == dict(size_divisor=16)
    for pipeline in (cfg.test_pipeline, cfg.test_dataloader.dataset.pipeline):
        assert pipeline[1] == dict(type='Resize', scale=(480, 480), keep_ratio=False)

    original_file(tmp_path / 'large_voc_lora.pt', dim=1024, depth=24)
    import_weights(monkeypatch, capsys, tmp_path / 'large_voc_lora.pt', tmp_path / 'out.pth',
                   '--backbone', 'dinov3')
    backbone = Config.fromfile(tmp_path / 'out.py').model.backbone
    assert backbone.arch == 'large' and backbone.lora.rank == 3
    assert backbone.pretrained == 'checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth'


def test_dinov3_sizes_the_original_cannot_load_are_refused(tmp_path, monkeypatch, capsys):
    """Its --size giant loads a DINOv2 ViT-g only: a 1536-wide DINOv3 file is no such file."""
    path = tmp_path / 'giant_voc_lora.pt'
    original_file(path, dim=1536, depth=40)
    message = ('has 1536 input channels; the DINOv3 widths the original project loads are '
               '[384, 768, 1024]')
    with pytest.raises(SystemExit, match=re.escape(str(path)) + '.*' + re.escape(message)):
        import_weights(monkeypatch, capsys, path, tmp_path / 'out.pth', '--backbone', 'dinov3')
    assert not (tmp_path / 'out.pth').exists() and not (tmp_path / 'out.py').exists()
