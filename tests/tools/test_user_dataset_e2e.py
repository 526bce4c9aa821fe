"""A config written the way a user trains on their own data, through every tool.

It inherits the main config and replaces its datasets wholesale (``_delete_=True``):
a ``ConcatDataset`` of two VOC-layout folders with its own pipelines, plain type names
(no ``mmseg::`` base left to give them a scope) and a data preprocessor that pads
training crops to a fixed size. The same model, dumped into one flat file without
``default_scope`` (a config written from scratch), goes through the tools that build
models. One training run serves all tests.
"""
import json

import mmcv
import numpy as np
import pytest
from mmengine.config import Config

from tests.helpers import (PYTHON, ROOT, free_port, logged_metrics, make_demo_voc,
                           run_tool)

USER_CONFIG = """\
_base_ = '{root}/configs/dinov2_lora_voc.py'

crop_size = (112, 112)
data_preprocessor = dict(size=crop_size, size_divisor=None)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(arch=dict(_delete_=True, embed_dims=64, num_layers=2, num_heads=2),
                  pretrained=None),
    decode_head=dict(in_channels=64))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(224, 112), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 112), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
folders = dict(img_path='JPEGImages', seg_map_path='SegmentationClass')
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(type='PascalVOCDataset', data_root='{voc_a}', data_prefix=folders,
                 ann_file='ImageSets/Segmentation/train.txt', pipeline=train_pipeline),
            dict(type='PascalVOCDataset', data_root='{voc_b}', data_prefix=folders,
                 ann_file='ImageSets/Segmentation/train.txt', pipeline=train_pipeline),
        ]))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(
        _delete_=True, type='PascalVOCDataset', data_root='{voc_a}', data_prefix=folders,
        ann_file='ImageSets/Segmentation/val.txt', pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0,
                        end=100)]
train_cfg = dict(max_iters=100, val_interval=100)
default_hooks = dict(checkpoint=dict(interval=100), logger=dict(interval=25))
"""


def without_scopes(node):
    """``node`` without ``_scope_`` keys (what ``mmseg::`` bases add), recursively."""
    if isinstance(node, dict):
        return {k: without_scopes(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(without_scopes(v) for v in node)
    return node


@pytest.fixture(scope='module')
def user(tmp_path_factory):
    root = tmp_path_factory.mktemp('user')
    voc_a = make_demo_voc(root / 'a', num_train=12, num_val=3)
    voc_b = make_demo_voc(root / 'b', num_train=8, num_val=1)
    config = root / 'my_voc.py'
    config.write_text(USER_CONFIG.format(root=ROOT, voc_a=voc_a, voc_b=voc_b))
    flat = without_scopes(Config.fromfile(config).to_dict())
    del flat['default_scope']
    from_scratch = root / 'from_scratch.py'
    Config(flat).dump(from_scratch)
    train = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', root / 'work')
    return dict(root=root, voc=voc_a, config=config, from_scratch=from_scratch,
                checkpoint=root / 'work' / 'iter_100.pth', train=train,
                val=logged_metrics(train, 'val'))


def test_training_checks_and_reads_both_datasets(user):
    assert 'train_dataloader.dataset: 20 samples checked (12 + 8 in 2 datasets)' in user['train']
    assert 'val_dataloader.dataset: 3 samples checked' in user['train']
    assert 'Iter(train) [100/100]' in user['train']
    assert user['val']['mIoU'] > 0


def test_test_and_dist_test_give_the_validation_metrics(user):
    single = run_tool(PYTHON, 'tools/test.py', user['config'], user['checkpoint'],
                      '--work-dir', user['root'] / 'test1')
    double = run_tool('bash', 'tools/dist_test.sh', user['config'], user['checkpoint'], 2,
                      '--work-dir', user['root'] / 'test2',
                      env=dict(PYTHON=PYTHON, PORT=str(free_port())))
    assert logged_metrics(single, 'test') == logged_metrics(double, 'test') == user['val']


def test_robustness_sweep_runs_on_the_user_test_set(user):
    work = user['root'] / 'robustness'
    run_tool(PYTHON, 'tools/analysis_tools/test_robustness.py', user['config'], user['checkpoint'],
             '--corruptions', 'gaussian_noise', '--severities', '5', '--work-dir', work)
    results = json.loads((work / 'robustness.json').read_text())['results']
    assert [(r['corruption'], r['severity']) for r in results] == [('clean', 0),
                                                                   ('gaussian_noise', 5)]
    assert results[0]['mIoU'] == user['val']['mIoU']


def test_infer_paints_the_user_test_images(user):
    names = (user['voc'] / 'ImageSets/Segmentation/val.txt').read_text().split()
    images = [user['voc'] / 'JPEGImages' / f'{name}.jpg' for name in names]
    out = user['root'] / 'overlays'
    run_tool(PYTHON, 'tools/misc/infer.py', *images, '--config', user['config'], '--checkpoint',
             user['checkpoint'], '--out', out, '--device', 'cpu')
    for image in images:
        overlay = mmcv.imread(str(out / f'{image.stem}.png'))
        assert overlay.shape == mmcv.imread(str(image)).shape


def test_config_from_scratch_without_default_scope(user):
    """test.py, merge_lora.py (then test.py on the merged model) and visualize_pca.py
    --config build the model from a config that names no scope."""
    flat, root = user['from_scratch'], user['root']
    assert 'default_scope' not in Config.fromfile(flat)
    test = run_tool(PYTHON, 'tools/test.py', flat, user['checkpoint'], '--work-dir',
                    root / 'flat_test')
    assert logged_metrics(test, 'test') == user['val']
    merged = root / 'merged.pth'
    run_tool(PYTHON, 'tools/model_converters/merge_lora.py', flat, user['checkpoint'], merged)
    test = run_tool(PYTHON, 'tools/test.py', flat, merged, '--work-dir', root / 'merged_test',
                    '--cfg-options', 'model.backbone.lora=None')
    assert np.allclose(list(logged_metrics(test, 'test').values()),
                       list(user['val'].values()), atol=0.02)
    image = user['voc'] / 'JPEGImages' / (
        (user['voc'] / 'ImageSets/Segmentation/val.txt').read_text().split()[0] + '.jpg')
    run_tool(PYTHON, 'tools/analysis_tools/visualize_pca.py', image, '--config', flat,
             '--checkpoint', user['checkpoint'], '--out', root / 'pca.png', '--size', 112,
             '--device', 'cpu')
    assert (root / 'pca.png').stat().st_size > 0
