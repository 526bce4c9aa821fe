import numpy as np
import pytest

from dinolora_mmseg.datasets import CheckSegMap


def results(labels):
    return dict(gt_seg_map=np.array(labels, dtype=np.uint8), seg_map_path='ann/0001.png')


def test_classes_and_ignore_pass():
    out = CheckSegMap(num_classes=21)(results([[0, 20], [255, 3]]))
    assert out['gt_seg_map'].tolist() == [[0, 20], [255, 3]]


def test_inference_without_labels_passes():
    assert CheckSegMap(num_classes=21)(dict(img_path='a.jpg')) == dict(img_path='a.jpg')


def test_stray_values_name_the_file_and_values():
    with pytest.raises(ValueError, match=r'ann/0001.png: label values \[21, 200\] are neither '
                                         r'classes 0..20 nor the ignore index 255'):
        CheckSegMap(num_classes=21)(results([[0, 21], [200, 255]]))
