"""Importing the original project's .pt files, built here in exactly their format."""
import re

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from mmengine.config import Config
from mmseg.apis import inference_model, init_model
from mmseg.datasets import ADE20KDataset, PascalVOCDataset
from PIL import Image

from tests.helpers import (PYTHON, ROOT, load_tool, logged_metrics, official_state_dict,
                           run_tool)
from tests.tools.model_converters.original_project import (TOOL, decided, import_weights,
                                                           original_file, original_logits)

def test_plain_load_needs_cuda_but_the_tool_does_not(tmp_path):
    original_file(tmp_path / 'large_voc_lora.pt', dim=1024, depth=24)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='CUDA'):
            torch.load(tmp_path / 'large_voc_lora.pt', weights_only=True)
    output = run_tool(PYTHON, TOOL, tmp_path / 'large_voc_lora.pt',
                      tmp_path / 'out.pth')
    assert 'ViT-large (24 blocks), LoRA rank 3, 21 classes' in output
    assert f'tools/test.py {tmp_path / "out.py"} {tmp_path / "out.pth"}' in output
    state = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    assert len(state) == 24 * 4 + 2
    assert state['backbone.blocks.23.attn.qkv.lora_B.v'].shape == (1024, 3)
    cfg = Config.fromfile(tmp_path / 'out.py')
    assert cfg.model.backbone.arch == 'large' and cfg.model.backbone.lora.rank == 3
    assert cfg.model.backbone.pretrained.endswith('dinov2_vitl14_reg4_pretrain.pth')


def test_imported_voc_model_predicts_what_the_original_predicts_from_an_image(
        tmp_path, monkeypatch, capsys):
    pretrained = tmp_path / 'dinov2_vits14_reg4_pretrain.pth'
    backbone_state = official_state_dict(384, 12, 4)
    torch.save(backbone_state, pretrained)
    seed_state = original_file(tmp_path / 'small_voc_lora.pt')
    config, checkpoint = tmp_path / 'imported.py', tmp_path / 'imported.pth'
    output = import_weights(monkeypatch, capsys, tmp_path / 'small_voc_lora.pt', checkpoint,
                            '--pretrained', pretrained)
    assert 'Assuming a DINOv2 file' in output
    assert f'python tools/test.py {config} {checkpoint}' in output
    assert f'python tools/misc/infer.py IMAGE --config {config} --checkpoint {checkpoint}' in output

    data_root = tmp_path / 'VOC2012'
    image = data_root / 'JPEGImages' / 'chelsea.jpg'
    image.parent.mkdir(parents=True)
    cv2.imwrite(str(image), skimage.data.chelsea()[..., ::-1])  # 300 x 451 RGB photo
    expected = original_logits(image, backbone_state, seed_state)
    labels, sure = expected.argmax(0), decided(expected)
    assert expected.shape == (21, 300, 451) and len(labels.unique()) >= 3

    # MMSeg's Python API with the written config
    model = init_model(str(config), str(checkpoint), device='cpu')
    assert model.dataset_meta['classes'] == PascalVOCDataset.METAINFO['classes']
    result = inference_model(model, str(image))
    assert (result.seg_logits.data - expected).abs().max() < 1e-4
    assert torch.equal(result.pred_sem_seg.data[0][sure], labels[sure])

    # tools/test.py on a Pascal VOC layout holding the image, the original's labels as truth
    # (near-ties ignored)
    (data_root / 'SegmentationClass').mkdir()
    Image.fromarray(np.where(sure, labels, 255).astype(np.uint8)).save(
        data_root / 'SegmentationClass' / 'chelsea.png')
    (data_root / 'ImageSets' / 'Segmentation').mkdir(parents=True)
    (data_root / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('chelsea\n')
    output = run_tool(PYTHON, 'tools/test.py', config, checkpoint, '--out', tmp_path / 'labels',
                      '--work-dir', tmp_path / 'work', '--cfg-options',
                      f'test_dataloader.dataset.data_root={data_root}',
                      'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False')
    predicted = torch.from_numpy(np.array(Image.open(tmp_path / 'labels' / 'chelsea.png')))
    assert torch.equal(predicted[sure], labels[sure].to(predicted.dtype))
    assert logged_metrics(output, 'test')['mIoU'] == 100.0

    # tools/misc/infer.py paints the original's labels in Pascal VOC's colours
    overlay, = load_tool('misc/infer').infer([str(image)], str(config), str(checkpoint),
                                        str(tmp_path / 'overlays'), opacity=1, device='cpu')
    overlay = cv2.cvtColor(cv2.imread(overlay), cv2.COLOR_BGR2RGB)
    palette = np.array(PascalVOCDataset.METAINFO['palette'], dtype=np.uint8)
    painted = (overlay == palette[labels.numpy()]).all(-1)
    assert painted[sure.numpy()].mean() > 0.9, painted.mean()  # class names cover the rest

    # MMSeg's usual input (ImageNet mean/std, short side 518), as in dinov2_lora_voc.py:
    # the original's labels on a small part of the image only
    old = init_model(f'{ROOT}/configs/dinov2_lora_voc.py', str(checkpoint), device='cpu',
                     cfg_options={'model.backbone.arch': 'small',
                                  'model.decode_head.in_channels': 384,
                                  'model.backbone.pretrained': str(pretrained)})
    old_labels = inference_model(old, str(image)).pred_sem_seg.data[0]
    assert (old_labels == labels).float().mean() < 0.5


def test_imported_ade20k_linear_model_predicts_what_the_original_predicts(
        tmp_path, monkeypatch, capsys):
    pretrained = tmp_path / 'dinov2_vits14_reg4_pretrain.pth'
    backbone_state = official_state_dict(384, 12, 4, seed=1)
    torch.save(backbone_state, pretrained)
    seed_state = original_file(tmp_path / 'small_ade20k_no_lora.pt', rank=None, classes=150,
                               seed=1)
    output = import_weights(monkeypatch, capsys, tmp_path / 'small_ade20k_no_lora.pt',
                            tmp_path / 'imported.pth', '--pretrained', pretrained)
    assert 'ViT-small (12 blocks), no LoRA, 150 classes' in output
    assert 'configs/dinov2_linear_ade20k_original_490.py' in output
    image = tmp_path / 'astronaut.png'
    cv2.imwrite(str(image), cv2.resize(skimage.data.astronaut(), (333, 250))[..., ::-1])
    expected = original_logits(image, backbone_state, seed_state)
    assert expected.shape == (150, 250, 333) and len(expected.argmax(0).unique()) >= 3

    model = init_model(str(tmp_path / 'imported.py'), str(tmp_path / 'imported.pth'),
                       device='cpu')
    assert model.dataset_meta['classes'] == ADE20KDataset.METAINFO['classes']
    assert model.dataset_meta['palette'] == [list(c) for c in ADE20KDataset.METAINFO['palette']]
    result = inference_model(model, str(image))
    assert (result.seg_logits.data - expected).abs().max() < 1e-4
    sure = decided(expected)
    assert torch.equal(result.pred_sem_seg.data[0][sure], expected.argmax(0)[sure])


def test_backbone_is_an_explicit_assumption(tmp_path, monkeypatch, capsys):
    """Without --backbone: DINOv3 where the file's name or folder says so, else DINOv2;
    either way said aloud."""
    src = tmp_path / 'output' / 'dinov3' / 'large_voc_lora.pt'
    src.parent.mkdir(parents=True)
    original_file(src, dim=1024, depth=24)
    output = import_weights(monkeypatch, capsys, src, tmp_path / 'out.pth')
    assert 'Assuming a DINOv3 file: dinov3/large_voc_lora.pt says so' in output
    assert Config.fromfile(tmp_path / 'out.py').model.backbone.type == 'DINOv3'
    output = import_weights(monkeypatch, capsys, src, tmp_path / 'out.pth', '--backbone', 'dinov2')
    assert 'Assuming' not in output
    assert Config.fromfile(tmp_path / 'out.py').model.backbone.type == 'DINOv2'
    plain = tmp_path / 'large_voc_lora.pt'
    plain.write_bytes(src.read_bytes())
    output = import_weights(monkeypatch, capsys, plain, tmp_path / 'out.pth')
    assert 'Assuming a DINOv2 file' in output
    assert Config.fromfile(tmp_path / 'out.py').model.backbone.type == 'DINOv2'


@pytest.mark.parametrize('extra, message', [
    ({'fpn.lateral.weight': torch.zeros(2)}, "unexpected keys \\['fpn.lateral.weight'\\]"),
    ({'w_a_005': torch.zeros(4, 384)}, 'w_a_005 has shape \\(4, 384\\), expected \\(3, 384\\)'),
    ({'w_a_030': torch.zeros(3, 384)}, "extra \\['w_a_030'\\]"),
    ({'classifier.weight': torch.zeros(10, 384, 1, 1), 'classifier.bias': torch.zeros(10)},
     'has 10 classes; the original project trains Pascal VOC \\(21\\) or ADE20k \\(150\\)'),
])
def test_unexpected_content_is_refused(tmp_path, monkeypatch, capsys, extra, message):
    path = tmp_path / 'bad.pt'
    original_file(path, extra=extra)
    with pytest.raises(SystemExit, match=re.escape(str(path)) + '.*' + message):
        import_weights(monkeypatch, capsys, path, tmp_path / 'out.pth')
    assert not (tmp_path / 'out.pth').exists() and not (tmp_path / 'out.py').exists()


def test_empty_file_and_bad_outputs_are_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / 'empty.pt').touch()
    with pytest.raises(SystemExit, match='empty.pt: the file ends early'):
        import_weights(monkeypatch, capsys, tmp_path / 'empty.pt', tmp_path / 'out.pth')
    original_file(tmp_path / 'small.pt')
    with pytest.raises(SystemExit, match='out.py: the checkpoint must not end with .py'):
        import_weights(monkeypatch, capsys, tmp_path / 'small.pt', tmp_path / 'out.py')
    with pytest.raises(SystemExit, match='--pretrained .*missing.pth: file not found'):
        import_weights(monkeypatch, capsys, tmp_path / 'small.pt', tmp_path / 'out.pth',
                       '--pretrained', tmp_path / 'missing.pth')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['empty.pt', 'small.pt']


def test_written_config_sets_size_rank_and_official_file(tmp_path, monkeypatch, capsys):
    original_file(tmp_path / 'base_ade20k_lora.pt', dim=768, rank=8, classes=150)
    output = import_weights(monkeypatch, capsys, tmp_path / 'base_ade20k_lora.pt',
                            tmp_path / 'out.pth')
    assert 'ViT-base (12 blocks), LoRA rank 8, 150 classes (ade20k)' in output
    cfg = Config.fromfile(tmp_path / 'out.py')
    assert cfg.model.backbone.arch == 'base'
    assert cfg.model.backbone.lora == dict(rank=8, alpha=8, dropout=0.0, targets=('q', 'v'))
    assert cfg.model.backbone.pretrained == ('https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/'
                                             'dinov2_vitb14_reg4_pretrain.pth')
    assert cfg.model.decode_head.in_channels == 768 and cfg.model.decode_head.num_classes == 150
    assert cfg.model.data_preprocessor.std == [255.0] * 3
    assert cfg.test_pipeline[1] == dict(type='Resize', scale=(490, 490), keep_ratio=False)
