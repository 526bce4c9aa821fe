"""The Mask2Former demo config on demo data, on the CPU: it learns, tools/test.py and a
2-process dist_test.sh agree with its validation, and so does tools/test.py --compile, its
checkpoint holds no frozen backbone weights, and --amp, inference overlays, the robustness
sweep and the benchmark run on it; ONNX export is refused by name."""
import json
import os.path as osp
import re

import pytest
import torch

from tests.helpers import (PYTHON, ROOT, load_tool, logged_metrics, official_state_dict,
                           one_and_two_process_metrics, run_tool, write_run_config)
from tests.tools.test_train_test_e2e import majority_class_miou

# 4 blocks of a 128-wide ViT with 4 registers, one ViTFPN input each, from an
# official-layout file; the demo's tiny Mask2Former (16 queries, 64 channels).
TINY_ARCH = 'dict(_delete_=True, embed_dims=128, num_layers=4, num_heads=2)'
ITERS = 100
# What a checkpoint holds of the tiny ViT's adapters: LoRA on q and v of its 4 blocks.
LORA_KEYS = {f'backbone.blocks.{i}.attn.qkv.lora_{m}.{t}' for i in range(4) for m in 'AB'
             for t in 'qv'}


def train_tiny(root, demo: str, iters: int):
    """``configs/demo/<demo>`` with the tiny ViT on fresh demo data, trained for ``iters``
    iterations under ``root``."""
    run_tool(PYTHON, 'tools/misc/make_demo_data.py', root / 'data', '--format', 'voc',
             '--num-train', 24, '--num-val', 8)
    weights = root / 'dinov2_tiny_reg4_pretrain.pth'
    torch.save(official_state_dict(128, 4, num_register_tokens=4), weights)
    voc = root / 'data/VOCdevkit/VOC2012'
    config = write_run_config(
        root / 'tiny_mask2former.py', osp.join(ROOT, 'configs/demo', demo), voc,
        f"dict(backbone=dict(arch={TINY_ARCH}, out_indices=(0, 1, 2, 3), "
        f"pretrained='{weights}'), neck=dict(in_channels=128))", iters=iters, batch_size=8)
    train = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', root / 'work')
    names = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()
    return dict(root=root, voc=voc, config=config, weights=weights, train=train,
                checkpoint=root / 'work' / f'iter_{iters}.pth',
                images=[voc / 'JPEGImages' / f'{name}.jpg' for name in names[:2]])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """The demo config with the tiny ViT, trained for ``ITERS`` iterations."""
    return train_tiny(tmp_path_factory.mktemp('mask2former_demo'),
                      'dinov2_lora_mask2former_voc_demo.py', ITERS)


@pytest.fixture(scope='module')
def trained_with_prior(tmp_path_factory):
    """The demo config with a spatial prior and the tiny ViT, trained for 10 iterations."""
    return train_tiny(tmp_path_factory.mktemp('mask2former_prior_demo'),
                      'dinov2_lora_mask2former_prior_voc_demo.py', 10)


def test_demo_config_learns(trained):
    """Predicting the majority class scores ~10 mIoU here (see test_train_test_e2e.py)."""
    miou = logged_metrics(trained['train'], 'val')['mIoU']
    baseline = majority_class_miou(trained['voc'])
    assert baseline < 20
    assert miou > 60, (miou, baseline)


def logged_trainable(output: str) -> int:
    """The trainable parameter count TrainableParamsHook logged in a training output."""
    return int(re.search(r'([\d,]+) trainable', output).group(1).replace(',', ''))


def test_checkpoint_holds_only_what_trains(trained):
    saved = torch.load(trained['checkpoint'], weights_only=True)
    state = saved['state_dict']
    record = saved['meta']['pretrained_weights']['backbone']
    assert record['pretrained'] == str(trained['weights'])
    assert {k for k in state if k.startswith('backbone.')} == LORA_KEYS
    assert any(k.startswith('neck.') for k in state)
    assert sum(v.numel() for v in state.values()) == logged_trainable(trained['train'])


def test_checkpoint_with_a_spatial_prior_holds_it_and_its_statistics(trained_with_prior):
    trained = trained_with_prior
    state = torch.load(trained['checkpoint'], weights_only=True)['state_dict']
    backbone = {k for k in state if k.startswith('backbone.')}
    prior = backbone - LORA_KEYS
    assert LORA_KEYS <= backbone and prior and all(k.startswith('backbone.spatial_prior.')
                                                   for k in prior)
    statistics = {k for k in prior if k.endswith(('running_mean', 'running_var',
                                                   'num_batches_tracked'))}
    assert len(statistics) == 3 * 6  # six convolutions, each with its BatchNorm
    # the statistics moved from BatchNorm's initial zeros and ones: they were trained
    assert all(state[k].abs().sum() > 0 for k in statistics if k.endswith('running_mean'))
    assert sum(v.numel() for k, v in state.items() if k not in statistics) == logged_trainable(
        trained['train'])


@pytest.mark.parametrize('name', ['trained', 'trained_with_prior'])
def test_test_and_dist_test_agree(name, request):
    trained = request.getfixturevalue(name)
    root, config, checkpoint = trained['root'], trained['config'], trained['checkpoint']
    val = logged_metrics(trained['train'], 'val')
    single, double = one_and_two_process_metrics(config, checkpoint, root)
    assert single == double == val


def test_compiled_test_gives_the_validation_miou(trained):
    output = run_tool(PYTHON, 'tools/test.py', trained['config'], trained['checkpoint'],
                      '--work-dir', trained['root'] / 'compiled', '--compile')
    assert 'torch.compile: first forward pass at 1x3x168x224 took' in output
    compiled = logged_metrics(output, 'test')
    assert compiled == pytest.approx(logged_metrics(trained['train'], 'val'), abs=0.01)


def test_onnx_export_is_refused_by_name(trained, tmp_path):
    export = load_tool('deployment/pytorch2onnx')
    with pytest.raises(ValueError, match='ONNX export of Mask2Former is not supported'):
        export.main([str(trained['config']), str(trained['checkpoint']), '--out',
                     str(tmp_path / 'model.onnx')])
    assert not (tmp_path / 'model.onnx').exists()


def test_amp_trains_in_bfloat16(trained, tmp_path):
    """Two bfloat16 steps from the trained model (at the warm-up's small learning rate)
    keep its predictions: 2 steps from random weights give a chance mIoU, 0 included."""
    # Without the speed check, which refuses CPUs without native bfloat16 (unit-tested).
    output = run_tool(PYTHON, 'tools/train.py', trained['config'], '--amp', '--work-dir',
                      tmp_path, '--cfg-options', 'train_cfg.max_iters=2',
                      'train_cfg.val_interval=2', 'optim_wrapper.check_bf16_speed=False',
                      f'load_from={trained["checkpoint"]}')
    assert 'BF16OptimWrapper' in (tmp_path / 'tiny_mask2former.py').read_text()
    miou = logged_metrics(output, 'val')['mIoU']
    assert miou > 0.5 * logged_metrics(trained['train'], 'val')['mIoU'] > 0


def test_inference_overlays(trained):
    out = trained['root'] / 'overlays'
    output = run_tool(PYTHON, 'tools/misc/infer.py', *trained['images'], '--config',
                      trained['config'], '--checkpoint', trained['checkpoint'], '--out', out,
                      '--device', 'cpu')
    assert f'{len(trained["images"])} overlays written' in output
    assert all((out / f'{path.stem}.png').is_file() for path in trained['images'])


def test_robustness_sweep(trained):
    work = trained['root'] / 'robustness'
    run_tool(PYTHON, 'tools/analysis_tools/test_robustness.py', trained['config'],
             trained['checkpoint'], '--work-dir', work, '--corruptions', 'gaussian_noise',
             '--severities', 5)
    results = json.loads((work / 'robustness.json').read_text())['results']
    val = logged_metrics(trained['train'], 'val')
    assert {m: results[0][m] for m in val} == val
    assert results[1]['corruption'] == 'gaussian_noise' and results[1]['aAcc'] != val['aAcc']


@pytest.mark.parametrize('mode', ['train', 'infer'])
def test_benchmark(trained, tmp_path, mode):
    out = tmp_path / 'report.json'
    load_tool('analysis_tools/benchmark').main(
        [str(trained['config']), '--mode', mode, '--batch-size', '2', '--img-size', '56', '56',
         '--iters', '1', '--warmup', '1', '--rounds', '1', '--device', 'cpu',
         '--matmul-size', '256', '--json', str(out)])
    ours = json.loads(out.read_text())['ours']
    assert ours['median_step_s'] > 0 and ours['flops_per_step'] > 0
    assert 0 < ours['params_trainable'] < ours['params_total']
