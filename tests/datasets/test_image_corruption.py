"""ImageCorruption: every ImageNet-C corruption, deterministic, BGR-correct, labels untouched."""
import subprocess
import zlib

import cv2
import mmcv
import numpy as np
import pytest
from mmcv.transforms import Compose
from mmseg.registry import TRANSFORMS
from skimage import data

from dinolora_mmseg.datasets import (CORRUPTION_FAMILIES, CORRUPTIONS, EXTRA_CORRUPTIONS,
                                     IMAGENET_C_CORRUPTIONS, SEVERITIES, ImageCorruption)
from tests.helpers import PYTHON, ROOT

PHOTO = np.ascontiguousarray(  # BGR, as LoadImageFromFile gives it; not square
    cv2.resize(data.astronaut(), (128, 96), interpolation=cv2.INTER_AREA)[..., ::-1])
SMALL = np.ascontiguousarray(PHOTO[30:50, 40:70])  # 20 x 30 px


def corrupt(img, corruption, severity, seed=None, path='JPEGImages/a.jpg', **results):
    return ImageCorruption(corruption, severity, seed)(
        dict(img=img.copy(), img_path=path, **results))['img']


def mean_abs_diff(a, b):
    return np.abs(a.astype(np.float64) - b).mean()


def test_names_and_families():
    assert len(IMAGENET_C_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert IMAGENET_C_CORRUPTIONS[:3] == ('gaussian_noise', 'shot_noise', 'impulse_noise')
    assert IMAGENET_C_CORRUPTIONS[-1] == 'jpeg_compression'
    members = [n for names in CORRUPTION_FAMILIES.values() for n in names]
    assert sorted(members) == sorted(CORRUPTIONS)
    assert isinstance(TRANSFORMS.build(dict(type='ImageCorruption')), ImageCorruption)


@pytest.mark.parametrize('corruption', CORRUPTIONS)
def test_every_severity_on_a_photo_and_a_small_image(corruption):
    for img in (PHOTO, SMALL):
        for severity in SEVERITIES:
            out = corrupt(img, corruption, severity)
            assert out.dtype == np.uint8 and out.shape == img.shape, (severity, out.shape)
            assert mean_abs_diff(out, img) > 0, (img.shape, severity)
            np.testing.assert_array_equal(out, corrupt(img, corruption, severity))


@pytest.mark.parametrize('corruption', CORRUPTION_FAMILIES['noise'] + ('glass_blur', 'snow'))
def test_other_images_and_seeds_get_other_noise(corruption):
    out = corrupt(PHOTO, corruption, 3)
    assert not np.array_equal(out, corrupt(PHOTO, corruption, 3, path='JPEGImages/b.jpg'))
    assert not np.array_equal(out, corrupt(PHOTO, corruption, 3, seed=1))
    assert np.array_equal(corrupt(PHOTO, corruption, 3, seed=0), out)  # None means 0
    # the file name alone counts, not where the data lies
    assert np.array_equal(corrupt(PHOTO, corruption, 3, path='/elsewhere/JPEGImages/a.jpg'), out)


def test_without_a_path_the_image_bytes_choose_the_noise():
    transform = ImageCorruption('gaussian_noise', 2)
    first = transform(dict(img=PHOTO.copy()))['img']
    assert np.array_equal(transform(dict(img=PHOTO.copy()))['img'], first)
    assert not np.array_equal(transform(dict(img=PHOTO[::-1].copy()))['img'], first[::-1])


def test_same_pixels_in_another_process():
    names = ('gaussian_noise', 'impulse_noise', 'glass_blur', 'frost', 'elastic_transform')
    script = ('import zlib; '
              'from tests.datasets.test_image_corruption import PHOTO, corrupt; '
              f'print([zlib.crc32(corrupt(PHOTO, n, 4).tobytes()) for n in {names}])')
    output = subprocess.run([PYTHON, '-c', script], cwd=ROOT, check=True, text=True,
                            stdout=subprocess.PIPE).stdout
    assert output.strip() == str([zlib.crc32(corrupt(PHOTO, n, 4).tobytes()) for n in names])


@pytest.mark.parametrize('corruption', CORRUPTION_FAMILIES['noise'] + CORRUPTION_FAMILIES['blur'])
def test_higher_severity_moves_the_image_further(corruption):
    distance = [mean_abs_diff(corrupt(PHOTO, corruption, s), PHOTO) for s in SEVERITIES]
    if corruption == 'glass_blur':
        # The reference parameters (sigma, max shift, iterations) are not monotonic:
        # severity 3 (1, 2, 3) shuffles more than 4 (1.1, 3, 2), and 1 and 2 are close.
        assert min(distance[2:]) > max(distance[:2]) and distance[4] == max(distance)
    else:
        assert all(np.diff(distance) > 0), distance


def test_colours_are_corrupted_in_rgb_order():
    # brightness keeps hue: pure blue stays blue, not red (channels put back in BGR order)
    blue = np.zeros((40, 40, 3), np.uint8)
    blue[..., 0] = 255
    out = corrupt(blue, 'brightness', 5)
    assert (out[..., 0] == 255).all() and (out[..., 1:] == 0).all()
    dark_blue = blue // 2
    out = corrupt(dark_blue, 'brightness', 5)
    assert (out[..., 0] > dark_blue[..., 0]).all() and (out[..., 1:] == 0).all()
    # mud (RGB 63, 42, 20) on black is brown: R > G > B in the BGR result
    mud = corrupt(np.zeros((64, 64, 3), np.uint8), 'spatter', 5).reshape(-1, 3)
    mud = mud[mud.any(axis=1)].astype(int)
    assert len(mud) > 50
    assert (mud[:, 2] > mud[:, 1]).all() and (mud[:, 1] > mud[:, 0]).all()
    # the frost textures are bluish white: B > R on black
    frost = corrupt(np.zeros((64, 64, 3), np.uint8), 'frost', 5).reshape(-1, 3).mean(axis=0)
    assert frost[0] > frost[2]


def test_labels_and_numpy_global_random_state_are_untouched():
    labels = np.random.default_rng(0).integers(0, 21, PHOTO.shape[:2], dtype=np.uint8)
    np.random.seed(123)
    state = np.random.get_state()
    for corruption in CORRUPTIONS:
        results = ImageCorruption(corruption, 5)(dict(img=PHOTO.copy(), img_path='a.jpg',
                                                      gt_seg_map=labels.copy()))
        np.testing.assert_array_equal(results['gt_seg_map'], labels)
        after = np.random.get_state()
        assert after[0] == state[0] and np.array_equal(after[1], state[1])
        assert after[2:] == state[2:]
    assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30)


def test_grey_images_stay_grey():
    grey = mmcv.bgr2gray(PHOTO)
    for corruption in ('gaussian_noise', 'motion_blur', 'frost', 'saturate', 'jpeg_compression'):
        out = corrupt(grey, corruption, 3)
        assert out.dtype == np.uint8 and out.shape == grey.shape, corruption


def test_in_a_pipeline_after_load_image_from_file(tmp_path):
    path = tmp_path / 'img.png'
    cv2.imwrite(str(path), PHOTO)
    pipeline = Compose([TRANSFORMS.build(t) for t in (
        dict(type='LoadImageFromFile'),
        dict(type='ImageCorruption', corruption='fog', severity=2, seed=7))])
    results = pipeline(dict(img_path=str(path)))
    np.testing.assert_array_equal(results['img'], corrupt(PHOTO, 'fog', 2, 7, path='img.png'))
    assert results['img_shape'] == PHOTO.shape[:2]
    assert 'fog' in repr(pipeline)


@pytest.mark.parametrize('kwargs, message', [
    (dict(corruption='gaussian'), "unknown corruption 'gaussian'; valid: gaussian_noise, "),
    (dict(corruption='Fog'), 'saturate'),
    (dict(severity=0), r'severity must be an int in \(1, 2, 3, 4, 5\), got 0'),
    (dict(severity=6), 'got 6'),
    (dict(severity=2.0), 'got 2.0'),
    (dict(severity='3'), "got '3'"),
    (dict(seed=1.5), 'seed must be an int or None, got 1.5'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageCorruption(**kwargs)


def test_bad_images_are_named():
    with pytest.raises(ValueError, match=r'needs a uint8 .* got float32 \(20, 30, 3\)'):
        corrupt(SMALL.astype(np.float32), 'fog', 1)
    with pytest.raises(ValueError, match=r'at least 4x4 pixels, got \(3, 30\)'):
        corrupt(SMALL[:3], 'pixelate', 5)
