"""The DINOv3 demo config on demo data: train -> test -> 2-process dist_test, inference
overlays and a robustness sweep, on the CPU."""
import json
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmseg.datasets import PascalVOCDataset

from tests.helpers import (PYTHON, ROOT, logged_metrics, official_dinov3_state_dict,
                           one_and_two_process_metrics, run_tool, write_run_config)

# A 2-block DINOv3 with 4 storage tokens and RoPE, from an official-layout file.
TINY_ARCH = 'dict(_delete_=True, embed_dims=96, num_layers=2, num_heads=2)'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """The demo config with the tiny DINOv3, trained for 20 iterations on demo data."""
    root = tmp_path_factory.mktemp('dinov3_demo')
    run_tool(PYTHON, 'tools/misc/make_demo_data.py', root / 'data', '--num-train', 8,
             '--num-val', 4)
    weights = root / 'dinov3_tiny_pretrain.pth'
    torch.save(official_dinov3_state_dict(96, 2, 2), weights)
    voc = root / 'data/VOCdevkit/VOC2012'
    config = write_run_config(
        root / 'tiny_dinov3.py', osp.join(ROOT, 'configs/demo/dinov3_lora_voc_demo.py'), voc,
        f"dict(backbone=dict(arch={TINY_ARCH}, pretrained='{weights}'), "
        'decode_head=dict(in_channels=96))', iters=20, batch_size=4)
    train = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', root / 'work')
    names = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()
    return dict(root=root, config=config, weights=weights, train=train,
                checkpoint=root / 'work' / 'iter_20.pth',
                images=[voc / 'JPEGImages' / f'{name}.jpg' for name in names])


def test_demo_config_trains_and_tests_alike(trained):
    root, config, checkpoint = trained['root'], trained['config'], trained['checkpoint']
    assert 'DINOv3: loaded pretrained weights' in trained['train']
    saved = torch.load(checkpoint, weights_only=True)
    state = saved['state_dict']
    # LoRA on q and v of both blocks and the head: the frozen weights (and the RoPE
    # periods) come from the pretrained file again, which the checkpoint names.
    record = saved['meta']['pretrained_weights']['backbone']
    assert record['pretrained'] == str(trained['weights'])
    assert {k for k in state if k.startswith('backbone.')} == {
        f'backbone.blocks.{i}.attn.qkv.lora_{m}.{t}' for i in range(2) for m in 'AB'
        for t in 'qv'}
    assert sum(v.numel() for v in state.values()) == 2 * 2 * 2 * 3 * 96 + 96 * 21 + 21
    val = logged_metrics(trained['train'], 'val')
    single, double = one_and_two_process_metrics(config, checkpoint, root)
    assert single == double == val
    assert val['mIoU'] > 0


def test_inference_overlays(trained):
    out = trained['root'] / 'overlays'
    output = run_tool(PYTHON, 'tools/misc/infer.py', *trained['images'], '--config',
                      trained['config'], '--checkpoint', trained['checkpoint'], '--out', out,
                      '--device', 'cpu')
    assert f'{len(trained["images"])} overlays written' in output
    palette = np.array(PascalVOCDataset.METAINFO['palette'])
    for path in trained['images']:
        image = mmcv.imread(str(path), channel_order='rgb').astype(int)
        overlay = mmcv.imread(str(out / f'{path.stem}.png'), channel_order='rgb').astype(int)
        assert overlay.shape == image.shape
        # overlay = floor(0.5 * image + 0.5 * colour), the colour a palette colour
        distance = np.abs((2 * overlay - image)[:, :, None] - palette).max(-1).min(-1)
        assert (distance <= 1).mean() > 0.9


def test_robustness_sweep(trained):
    work = trained['root'] / 'robustness'
    output = run_tool(PYTHON, 'tools/analysis_tools/test_robustness.py', trained['config'],
                      trained['checkpoint'], '--work-dir', work, '--corruptions',
                      'gaussian_noise', '--severities', 5)
    results = json.loads((work / 'robustness.json').read_text())['results']
    assert [(r['corruption'], r['severity']) for r in results] == [('clean', 0),
                                                                 ('gaussian_noise', 5)]
    # the clean run is tools/train.py's validation: same data, pipeline and metric
    val = logged_metrics(trained['train'], 'val')
    assert {m: results[0][m] for m in val} == val
    assert f"[2/2] gaussian_noise severity 5: mIoU {results[1]['mIoU']:.2f}" in output
    assert results[1]['aAcc'] != results[0]['aAcc']  # the noise reached the model
    assert all((work / name).is_file() for name in ('robustness.csv', 'robustness.md',
                                                    'robustness.png'))
