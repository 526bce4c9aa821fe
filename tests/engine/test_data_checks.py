import shutil

import pytest
from mmengine.config import Config

from dinolora_mmseg.engine.data_checks import check_dataloaders, check_dataset
from tests.helpers import ROOT, make_demo_voc


@pytest.fixture
def voc(tmp_path_factory):
    return make_demo_voc(tmp_path_factory.mktemp('checks'), num_train=3, num_val=2)


def dataset_cfg(voc):
    cfg = Config.fromfile(f'{ROOT}/configs/dinov2_lora_voc.py')
    cfg.train_dataloader.dataset.data_root = str(voc)
    return cfg.train_dataloader.dataset


def test_a_complete_dataset_passes(voc):
    assert check_dataset(dataset_cfg(voc), 'train_dataloader') == 3


def test_missing_data_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_dataloader: data_root '.*nowhere' does "
                                                'not exist'):
        check_dataset(dataset_cfg(tmp_path / 'nowhere'), 'train_dataloader')


def test_missing_label_folder(voc):
    shutil.rmtree(voc / 'SegmentationClass')
    with pytest.raises(FileNotFoundError, match='the seg_map_path folder .*SegmentationClass'):
        check_dataset(dataset_cfg(voc), 'train_dataloader')


def test_missing_split_file(voc):
    (voc / 'ImageSets/Segmentation/train.txt').unlink()
    with pytest.raises(FileNotFoundError, match='split file .*train.txt.* is missing'):
        check_dataset(dataset_cfg(voc), 'train_dataloader')


def test_split_names_a_missing_image(voc):
    split = voc / 'ImageSets/Segmentation/train.txt'
    split.write_text(split.read_text() + 'not_there\n')
    with pytest.raises(FileNotFoundError, match='JPEGImages/not_there.jpg .*listed in .*train.txt'):
        check_dataset(dataset_cfg(voc), 'train_dataloader')


def test_truncated_jpeg(voc):
    image = sorted((voc / 'JPEGImages').glob('*.jpg'))[0]
    image.write_bytes(image.read_bytes()[:len(image.read_bytes()) // 2])
    with pytest.raises(ValueError, match=f'{image.name} is a corrupt or truncated JPEG'):
        check_dataloaders(Config(dict(train_dataloader=dict(dataset=dataset_cfg(voc)))))
