import shutil

import pytest
from mmengine.config import Config

from dinolora_mmseg.datasets.data_checks import check_dataloaders, check_dataset
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
    with pytest.raises(ValueError, match=f'{image.name}: corrupt or truncated JPEG'):
        check_dataloaders(Config(dict(train_dataloader=dict(dataset=dataset_cfg(voc)))))


def voc_cfg(root, split='train'):
    """A dataset written as a user writes one: plain types, own pipeline with MMSeg's
    RandomCrop (not in MMEngine's registry), no ``_scope_`` from an ``mmseg::`` base."""
    return dict(type='PascalVOCDataset', data_root=str(root),
                ann_file=f'ImageSets/Segmentation/{split}.txt',
                data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
                pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                          dict(type='RandomCrop', crop_size=(112, 112)),
                          dict(type='PackSegInputs')])


@pytest.fixture
def other_voc(tmp_path_factory):
    return make_demo_voc(tmp_path_factory.mktemp('other'), num_train=2, num_val=1)


def test_user_dataset_replacing_the_base_one_is_built_in_the_config_scope(voc, tmp_path):
    config = tmp_path / 'user.py'
    config.write_text(f"_base_ = '{ROOT}/configs/dinov2_lora_voc.py'\n"
                      'train_dataloader = dict(dataset=dict(_delete_=True, '
                      f'**{voc_cfg(voc)!r}))\n'
                      'val_dataloader = dict(dataset=dict(_delete_=True, '
                      f"**{voc_cfg(voc, 'val')!r}))\n")
    cfg = Config.fromfile(config)
    assert '_scope_' not in cfg.train_dataloader.dataset
    assert check_dataloaders(cfg) == {'train_dataloader': 3, 'val_dataloader': 2}


def test_config_without_default_scope_is_built_in_mmseg_scope(voc):
    cfg = Config(dict(train_dataloader=dict(dataset=voc_cfg(voc))))
    assert check_dataloaders(cfg) == {'train_dataloader': 3}


def test_concat_dataset_counts_all_and_names_the_inner_dataset_that_fails(voc, other_voc):
    concat = dict(type='ConcatDataset', datasets=[voc_cfg(voc), voc_cfg(other_voc)])
    assert check_dataset(concat, 'train_dataloader.dataset') == 5
    label = sorted((other_voc / 'SegmentationClass').glob('*.png'))[0]
    label.write_bytes(b'')
    with pytest.raises(ValueError, match=r'train_dataloader.dataset.datasets\[1\]: 1 of 2 '
                                         f'samples have unusable files:\n  {label}: empty'):
        check_dataset(concat, 'train_dataloader.dataset')
    shutil.rmtree(other_voc)
    with pytest.raises(FileNotFoundError, match=r'train_dataloader.dataset.datasets\[1\]: '
                                                'data_root .* does not exist'):
        check_dataset(concat, 'train_dataloader.dataset')


def test_repeat_dataset_is_checked_through(voc):
    repeat = dict(type='RepeatDataset', times=2, dataset=voc_cfg(voc))
    assert check_dataset(repeat, 'train_dataloader.dataset') == 6
    (voc / 'ImageSets/Segmentation/train.txt').write_text('not_there\n')
    with pytest.raises(FileNotFoundError, match='train_dataloader.dataset.dataset: 2 listed '
                                                'files do not exist:\n.*not_there.jpg'):
        check_dataset(repeat, 'train_dataloader.dataset')
