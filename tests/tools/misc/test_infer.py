"""tools/misc/infer.py: overlays of the predictions of a briefly trained tiny model."""
import os.path as osp

import cv2
import mmcv
import numpy as np
import pytest
from mmseg.datasets import PascalVOCDataset

from tests.helpers import PYTHON, ROOT, load_tool, run_tool, write_tiny_config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Demo data in the VOC layout and a tiny model trained on it for 2 iterations."""
    root = tmp_path_factory.mktemp('infer')
    run_tool(PYTHON, 'tools/misc/make_demo_data.py', root / 'data', '--format', 'voc',
             '--num-train', 4, '--num-val', 2)
    voc = root / 'data' / 'VOCdevkit' / 'VOC2012'
    base = osp.join(ROOT, 'configs/demo/dinov2_lora_voc_demo.py')
    config = write_tiny_config(root / 'tiny_voc.py', base, voc,
                               train_cfg='dict(max_iters=2, val_interval=2)',
                               default_hooks='dict(checkpoint=dict(interval=2))')
    run_tool(PYTHON, 'tools/train.py', config, '--work-dir', root / 'work')
    names = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()
    return dict(root=root, config=config, checkpoint=root / 'work' / 'iter_2.pth',
                images=[voc / 'JPEGImages' / f'{name}.jpg' for name in names])


def test_overlays_paint_the_palette_over_each_image(trained):
    out = trained['root'] / 'overlays' / 'run1'
    output = run_tool(PYTHON, 'tools/misc/infer.py', *trained['images'], '--config',
                      trained['config'], '--checkpoint', trained['checkpoint'], '--out', out,
                      '--device', 'cpu')
    assert '2 overlays written' in output
    palette = np.array(PascalVOCDataset.METAINFO['palette'])
    for path in trained['images']:
        image = mmcv.imread(str(path), channel_order='rgb').astype(int)
        overlay = mmcv.imread(str(out / f'{path.stem}.png'), channel_order='rgb').astype(int)
        assert overlay.shape == image.shape
        assert (overlay != image).any(-1).mean() > 0.9
        # overlay = floor(0.5 * image + 0.5 * colour): the colour of almost every pixel
        # (all but the class names written on the regions) is a palette colour
        colour = 2 * overlay - image
        distance = np.abs(colour[:, :, None] - palette).max(-1).min(-1)
        assert (distance <= 1).mean() > 0.9


def test_missing_image_writes_nothing(trained):
    tool = load_tool('misc/infer')
    out = trained['root'] / 'overlays' / 'run2'
    missing = trained['root'] / 'missing.jpg'
    with pytest.raises(FileNotFoundError, match=f'Image not found: {missing}'):
        tool.infer([str(trained['images'][0]), str(missing)], str(trained['config']),
                   str(trained['checkpoint']), str(out))
    assert not out.exists()
    with pytest.raises(ValueError, match='would both be written to'):
        tool.infer([str(trained['images'][0])] * 2, str(trained['config']),
                   str(trained['checkpoint']), str(out))


def truncated_jpeg() -> bytes:
    encoded = cv2.imencode('.jpg', np.random.default_rng(0).integers(0, 256, (64, 64, 3),
                                                                      dtype=np.uint8))[1]
    return encoded.tobytes()[:1000]


@pytest.mark.parametrize('content, problem', [
    (b'', r'empty file \(0 bytes\)'),
    (b'not an image', 'cannot be decoded as an image'),
    (truncated_jpeg(), r'corrupt or truncated JPEG \(no end-of-image marker\)'),
], ids=['empty', 'not-an-image', 'truncated'])
def test_unreadable_image_is_named_before_any_model_is_built(tmp_path, content, problem):
    image = tmp_path / 'photo.jpg'
    image.write_bytes(content)
    with pytest.raises(ValueError, match=f'{image}: {problem}'):  # config and checkpoint
        load_tool('misc/infer').infer([str(image)], str(tmp_path / 'absent.py'),  # not read
                                 str(tmp_path / 'absent.pth'), str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()
