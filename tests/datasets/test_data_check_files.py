"""The pre-run data checks on the files themselves: labels as stored, image and label
sizes, empty, truncated and undecodable files, and sets with no labelled pixel."""
import shutil
import uuid

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger
from PIL import Image

from dinolora_mmseg.datasets.data_checks import check_dataset
from dinolora_mmseg.datasets.data_checks import samples as sample_checks
from dinolora_mmseg.datasets.data_checks.image_file import EXIF_ORIENTATION
from dinolora_mmseg.datasets.data_checks.samples import check_samples
from tests.helpers import ROOT, make_demo_voc


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    return make_demo_voc(tmp_path_factory.mktemp('pristine'), num_train=3, num_val=1)


@pytest.fixture
def voc(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / 'VOC2012')


def names(voc):
    return (voc / 'ImageSets/Segmentation/train.txt').read_text().split()


def image(voc, index=0):
    return voc / 'JPEGImages' / f'{names(voc)[index]}.jpg'


def label(voc, index=0):
    return voc / 'SegmentationClass' / f'{names(voc)[index]}.png'


def stored(path):
    return np.array(Image.open(path))


def check(voc, **settings):
    cfg = Config.fromfile(f'{ROOT}/configs/dinov2_lora_voc.py').train_dataloader.dataset
    cfg.data_root = str(voc)
    cfg.update(settings)
    return check_dataset(cfg, 'train_dataloader')


def save_palette_label(path, values):
    original = Image.open(path)
    new = Image.fromarray(values.astype(np.uint8), 'P')
    new.putpalette(original.getpalette())
    new.save(path)


def sixteen_bit_261(path):
    values = stored(path).astype(np.uint16)
    values[0, 0] = 261  # read as uint8 by LoadAnnotations: 5, a class
    Image.fromarray(values).save(path)


def class_30(path):
    values = stored(path)
    values[0, 0] = 30
    save_palette_label(path, values)


def rgb(path):
    Image.open(path).convert('RGB').save(path)


def empty(path):
    path.write_bytes(b'')


def truncated(path):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def corrupt_inside(path):
    """Bytes of the compressed pixel data overwritten; header and IEND intact."""
    data = bytearray(path.read_bytes())
    start = data.index(b'IDAT') + 8
    data[start:start + 64] = bytes(64)
    path.write_bytes(bytes(data))


def not_an_image(path):
    path.write_text('not an image')


def narrower(path):
    save_palette_label(path, stored(path)[:, 10:])


def exif_quarter_turn(path):
    """Orientation 6: viewers and the loader turn the 224 x 168 picture to 168 x 224."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.open(path).save(path, exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize('damage, target, problem', [
    (sixteen_bit_261, label, '16-bit label with values up to 261; class indices must be < 21 '
                             r'or 255 \(ignore\)'),
    (class_30, label, r'label values \[30\]; class indices must be < 21 or 255 \(ignore\)'),
    (rgb, label, r'3-channel label \(RGB\); labels must be one channel of class indices'),
    (empty, label, r'empty file \(0 bytes\)'),
    (truncated, label, r'truncated PNG \(no IEND chunk at the end\)'),
    (corrupt_inside, label, 'cannot be decoded as an image'),
    (not_an_image, label, 'cannot be decoded as an image'),
    (empty, image, r'empty file \(0 bytes\)'),
    (truncated, image, r'corrupt or truncated JPEG \(no end-of-image marker\)'),
    (not_an_image, image, 'cannot be decoded as an image'),
], ids=lambda v: getattr(v, '__name__', None))
def test_unusable_file_is_named_with_what_is_wrong(voc, damage, target, problem):
    path = target(voc)
    damage(path)
    with pytest.raises(ValueError, match=f'train_dataloader: 1 of 3 samples have unusable '
                                         f'files:\n  {path}: {problem}'):
        check(voc)


def test_every_unusable_file_is_listed(voc):
    for index, damage in enumerate((sixteen_bit_261, rgb, empty)):
        damage(label(voc, index))
    with pytest.raises(ValueError, match='3 of 3 samples') as error:
        check(voc)
    assert all(str(label(voc, index)) in str(error.value) for index in range(3))


def test_sixteen_bit_label_within_0_255_is_legal(voc):
    Image.fromarray(stored(label(voc)).astype(np.uint16)).save(label(voc))
    assert Image.open(label(voc)).mode.startswith('I;16')
    assert check(voc) == 3


def test_palette_label_read_with_cv2_is_refused_with_the_fix(voc):
    cfg = Config.fromfile(f'{ROOT}/configs/dinov2_lora_voc.py').train_dataloader.dataset
    cfg.pipeline[1].imdecode_backend = 'cv2'
    with pytest.raises(ValueError, match=r"3-channel label \(P\).*reads palette PNGs as "
                                         "colours, use 'pillow'"):
        check(voc, pipeline=cfg.pipeline)


def test_values_are_judged_after_reduce_zero_label(voc):
    values = stored(label(voc))
    values[values == 15] = 21  # a class only with reduce_zero_label (21 -> 20)
    save_palette_label(label(voc), values)
    with pytest.raises(ValueError, match=r'label values \[21\]; class indices must be < 21 or '
                                         r'255 \(ignore\)$'):
        check(voc)
    assert check(voc, reduce_zero_label=True) == 3


def test_image_and_label_of_different_sizes_are_named_as_a_pair(voc):
    narrower(label(voc))
    with pytest.raises(ValueError, match=f'{image(voc)}: image is 224x168 but its label '
                                         f'{label(voc)} is 214x168'):
        check(voc)


def test_exif_turned_image_needs_a_turned_label(voc):
    exif_quarter_turn(image(voc))
    with pytest.raises(ValueError, match=f'{image(voc)}: image is 168x224 after its EXIF '
                                         f'orientation but its label {label(voc)} is 224x168'):
        check(voc)
    save_palette_label(label(voc), np.rot90(stored(label(voc)), -1))
    assert check(voc) == 3


def test_exif_orientation_counts_only_where_the_loader_applies_it(voc):
    exif_quarter_turn(image(voc))
    cfg = Config.fromfile(f'{ROOT}/configs/dinov2_lora_voc.py').train_dataloader.dataset
    cfg.pipeline[0].color_type = 'color_ignore_orientation'
    assert check(voc, pipeline=cfg.pipeline) == 3


def capture_log(capsys):
    """A function returning what print_log has written since; call in the test itself
    (a new current MMLogger writes to the stdout capsys holds now)."""
    MMLogger.get_instance(f'data-checks-{uuid.uuid4()}')
    return lambda: capsys.readouterr().out


def test_one_label_map_without_labelled_pixel_is_a_warning_with_the_count(voc, capsys):
    log = capture_log(capsys)
    save_palette_label(label(voc), np.full_like(stored(label(voc)), 255))
    assert check(voc) == 3
    assert ('WARNING - train_dataloader: 1 of 3 label maps have no labelled pixel (class '
            f'indices must be < 21 or 255 (ignore)), e.g. {label(voc)}') in log()


def test_label_map_of_classes_outside_the_chosen_ones_has_no_labelled_pixel(voc, capsys):
    log = capture_log(capsys)
    values = stored(label(voc))
    values[values != 255] = 5  # bottle: mapped to 255 below
    save_palette_label(label(voc), values)
    check(voc, metainfo=dict(classes=('background', 'aeroplane')))
    assert ('1 of 3 label maps have no labelled pixel (class indices must be < 2 or 255 '
            '(ignore) after label_map)') in log()


@pytest.mark.parametrize('reduce_zero_label, fill', [(False, 255), (True, 0)])
def test_set_without_any_labelled_pixel_is_an_error(voc, reduce_zero_label, fill):
    for index in range(3):
        values = stored(label(voc, index))
        values[values != 255] = fill
        save_palette_label(label(voc, index), values)
    with pytest.raises(ValueError, match='train_dataloader: none of its 3 label maps has a '
                                         'labelled pixel: training would learn nothing and '
                                         'mIoU would be nan'):
        check(voc, reduce_zero_label=reduce_zero_label)


def test_worker_processes_report_what_one_process_reports(voc, monkeypatch):
    sixteen_bit_261(label(voc, 1))
    narrower(label(voc, 2))
    paths = [(str(image(voc, i)), str(label(voc, i))) for i in range(3)] * 4
    one = check_samples(paths, sample_checks.ImageLoader(), sample_checks.LabelRules(21), 1)
    monkeypatch.setattr(sample_checks, 'PARALLEL_FROM', 2)
    two = check_samples(paths, sample_checks.ImageLoader(), sample_checks.LabelRules(21), 2)
    assert one == two
    assert [len(report.problems) for report in two] == [0, 1, 1] * 4
