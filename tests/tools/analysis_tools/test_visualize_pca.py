"""tools/analysis_tools/visualize_pca.py on photos of ``skimage.data``, with random DINOv2s and
DINOv3s."""
import os.path as osp
import sys

import mmcv
import numpy as np
import pytest
import torch
from mmseg.apis import init_model
from skimage import data

from dinolora_mmseg.models.lora import lora_layers
from tests.helpers import (PYTHON, ROOT, load_tool, official_dinov3_state_dict,
                           official_state_dict, run_tool, write_tiny_config)

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket')
TINY = dict(embed_dims=64, num_layers=2, num_heads=2)


TOOL = 'tools/analysis_tools/visualize_pca.py'
tool = load_tool('analysis_tools/visualize_pca')


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    """The photos as RGB arrays and as JPEG files."""
    folder = tmp_path_factory.mktemp('photos')
    images = [getattr(data, name)() for name in PHOTOS]
    paths = [str(folder / f'{name}.jpg') for name in PHOTOS]
    for image, path in zip(images, paths):
        mmcv.imwrite(mmcv.rgb2bgr(image), path)
    return dict(images=images, paths=paths)


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    backbone, normalisation = tool.build_backbone(arch=TINY, num_register_tokens=0)
    assert normalisation == tool.IMAGENET
    return backbone


@pytest.fixture(scope='module')
def features(photos, backbone):
    return tool.extract_features(backbone, photos['images'], size=112)


def border(grid):
    return np.concatenate([grid[0], grid[-1], grid[1:-1, 0], grid[1:-1, -1]])


def test_features_are_patch_grids_of_the_last_block(features):
    assert [f.shape for f in features] == [(8, 8, 64)] * len(PHOTOS)
    # the final LayerNorm: every patch has zero mean over channels
    assert max(abs(f.mean(-1)).max() for f in features) < 1e-4


def test_background_is_black_and_foreground_coloured(features):
    maps, masks = tool.pca_maps(features)
    assert [m.shape for m in maps] == [(8, 8, 3)] * len(PHOTOS)
    assert [m.shape for m in masks] == [(8, 8)] * len(PHOTOS)
    foreground = np.concatenate([m.ravel() for m in masks])
    colours = np.concatenate([m.reshape(-1, 3) for m in maps])
    assert 0 < foreground.mean() < 1
    assert np.all(colours[~foreground] == 0)
    assert np.all(colours[foreground].max(-1) > 0)
    assert colours.min() == 0 and colours.max() == 1
    # each component spans [0, 1] over the foreground
    assert np.allclose(colours[foreground].min(0), 0) and np.allclose(colours[foreground].max(0), 1)


def test_direction_swaps_foreground_and_background(features):
    _, positive = tool.pca_maps(features, direction='positive')
    _, negative = tool.pca_maps(features, direction='negative')
    _, auto = tool.pca_maps(features, direction='auto')
    for p, n in zip(positive, negative):
        assert np.all(p != n)
    chosen = positive if np.array_equal(auto[0], positive[0]) else negative
    assert all(np.array_equal(a, c) for a, c in zip(auto, chosen))
    on_borders = np.concatenate([border(m) for m in auto]).mean()
    on_other_borders = np.concatenate([border(~m) for m in auto]).mean()
    assert on_borders <= 0.5 and on_borders <= on_other_borders


def test_threshold_sets_the_foreground(features):
    counts = [sum(m.sum() for m in tool.pca_maps(features, t, 'positive')[1])
              for t in (0.0, 0.3, 0.5, 0.7)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert counts[0] == 4 * 64 - 1  # all but the patch where the component is lowest
    with pytest.raises(ValueError, match='lower the threshold'):
        tool.pca_maps(features, 1.0, 'positive')
    with pytest.raises(ValueError, match=r'threshold must be in \[0, 1\]'):
        tool.pca_maps(features, 1.5)


def test_first_pca_is_fit_over_all_images(photos, backbone, features):
    """Replacing one image changes the maps of the others."""
    maps, _ = tool.pca_maps(features)
    other = tool.extract_features(backbone, [data.coffee()[::-1]], size=112)
    changed, _ = tool.pca_maps(features[:3] + other)
    alone, _ = tool.pca_maps(features[:1])
    for i in range(3):
        assert not np.allclose(maps[i], changed[i])
    assert not np.allclose(maps[0], alone[0])


@pytest.mark.parametrize('family, state, size', [
    ('dinov2', lambda: official_state_dict(384, 12, 4), 98),
    ('dinov3', lambda: official_dinov3_state_dict(384, 12, 6), 96)])
def test_command_line_with_official_layout_file(photos, tmp_path, family, state, size):
    """ViT-S/14-reg4 or ViT-S/16 from a file in the official layout, at the --size rounded
    to a multiple of its patch size; the PNG is the function results."""
    weights = tmp_path / f'{family}_vits_pretrain.pth'
    torch.save(state(), weights)
    out = tmp_path / 'sub' / 'pca.png'
    output = run_tool(PYTHON, TOOL, *photos['paths'], '--out', out, '--family', family,
                      '--arch', 'small', '--registers', 4, '--pretrained', weights,
                      '--size', 100, '--height', 60)
    assert f'rounded to {size}' in output
    assert f'{family.replace("dinov", "DINOv")}: loaded pretrained weights' in output
    grid = mmcv.imread(str(out), channel_order='rgb')
    widths = [round(image.shape[1] * 60 / image.shape[0]) for image in photos['images']]
    assert grid.shape == (2 * 60, sum(widths), 3)

    backbone, normalisation = tool.build_backbone(family, 'small', 4, str(weights))
    assert type(backbone).__name__ == family.replace('dinov', 'DINOv')
    images = [tool.load_image(path) for path in photos['paths']]
    features = tool.extract_features(backbone, images, size, normalisation)
    assert features[0].shape == (size // backbone.patch_size, ) * 2 + (384, )
    maps, masks = tool.pca_maps(features)
    assert np.array_equal(grid, tool.make_grid(images, maps, 60))
    assert sum(m.sum() for m in masks) > 0
    # the PCA row is black exactly where the upsampled background is
    x = 0
    for image, mask, width in zip(images, masks, widths):
        background = ~mmcv.imresize(mask.astype(np.uint8), (width, 60),
                                    interpolation='nearest').astype(bool)
        cell = grid[60:, x:x + width]
        assert np.all(cell[background] == 0) and np.all(cell[~background].max(-1) > 0)
        x += width


def trained_model(tmp_path, base):
    """A tiny model of the config ``base`` with random non-zero adapters, saved as a
    checkpoint; returns (config, checkpoint, model)."""
    config = write_tiny_config(tmp_path / 'tiny.py', osp.join(ROOT, base), **TINY)
    model = init_model(str(config), device='cpu')
    for layer in lora_layers(model.backbone):
        for b in layer.lora_B.values():
            torch.nn.init.normal_(b)
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta={}), checkpoint)
    return config, checkpoint, model


@pytest.mark.parametrize('base', ['configs/demo/dinov2_lora_voc_demo.py',
                                  'configs/demo/dinov3_lora_voc_demo.py'])
def test_backbone_of_a_trained_model_keeps_lora(tmp_path, base):
    """--config/--checkpoint: the trained backbone, adapters included and active."""
    config, checkpoint, model = trained_model(tmp_path, base)
    backbone, normalisation = tool.build_backbone(config=str(config),
                                                  checkpoint=str(checkpoint))
    assert type(backbone) is type(model.backbone) and normalisation == tool.IMAGENET
    assert len(list(lora_layers(backbone))) == TINY['num_layers']
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        trained = backbone(x)[0]
        assert torch.equal(trained, model.backbone(x)[-1])
        for layer in lora_layers(backbone):
            for b in layer.lora_B.values():
                b.zero_()
        assert not torch.allclose(backbone(x)[0], trained, atol=1e-3)


def test_backbone_of_a_config_gets_the_config_normalisation(photos, tmp_path):
    """A DINOv3 config that feeds RGB / 255 (the original project's): its features are
    those of the resized photo divided by 255, on the 16-pixel patch grid."""
    config, checkpoint, model = trained_model(tmp_path, 'configs/dinov3_lora_voc_original_480.py')
    backbone, normalisation = tool.build_backbone(config=str(config),
                                                  checkpoint=str(checkpoint))
    assert normalisation == ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0), True)
    image = photos['images'][1]
    features, = tool.extract_features(backbone, [image], 96, normalisation)
    x = torch.from_numpy(mmcv.imresize(image, (96, 96))).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        expected = model.backbone(x)[-1][0].permute(1, 2, 0).numpy()
    assert features.shape == (6, 6, 64)
    assert np.abs(features - expected).max() < 1e-5
    imagenet, = tool.extract_features(backbone, [image], 96)
    assert np.abs(imagenet - expected).max() > 0.1
    # a model fed BGR (bgr_to_rgb=False) gets the channels in that order
    bgr = tool.config_normalisation(dict(mean=[1, 2, 3], std=[4, 5, 6], bgr_to_rgb=False))
    assert bgr == ((1, 2, 3), (4, 5, 6), False)
    flipped, = tool.extract_features(backbone, [image[..., ::-1]], 96, bgr._replace(
        mean=(0.0, ) * 3, std=(255.0, ) * 3))
    assert np.abs(flipped - expected).max() < 1e-5


def test_errors(photos, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / 'pca.png')
    missing = str(tmp_path / 'missing.jpg')
    monkeypatch.setattr(sys, 'argv', ['visualize_pca.py', photos['paths'][0], missing,
                                      '--out', out])
    with pytest.raises(FileNotFoundError, match=f'Image not found: {missing}'):
        tool.main()
    assert not osp.exists(out)

    text = tmp_path / 'notes.jpg'
    text.write_text('not an image')
    with pytest.raises(ValueError, match=f'{text}: cannot be decoded as an image'):
        tool.load_image(str(text))

    for options, message in [
            (['--out', out, '--config', 'c.py'], '--config and --checkpoint go together'),
            (['--out', out, '--checkpoint', 'k.pth'], '--config and --checkpoint go together'),
            (['--out', out, '--config', 'c.py', '--checkpoint', 'k.pth', '--arch', 'small'],
             'drop --arch'),
            (['--out', out, '--config', 'c.py', '--checkpoint', 'k.pth', '--family', 'dinov3'],
             'drop --family'),
            (['--out', out, '--family', 'dinov3', '--arch', 'giant'],
             '--arch giant is not a DINOv3 size; choose one of small, small_plus, base, large, '
             'huge_plus, 7b'),
            (['--out', out, '--threshold', '2'], '--threshold must be in [0, 1], got 2.0'),
            (['--out', 'pca.jpg'], '--out must name a .png file, got pca.jpg')]:
        monkeypatch.setattr(sys, 'argv', ['visualize_pca.py', photos['paths'][0], *options])
        with pytest.raises(SystemExit):
            tool.main()
        assert message in capsys.readouterr().err
