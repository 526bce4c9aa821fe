"""tools/analysis_tools/benchmark.py on a tiny model: complete reports, the references, the
fast paths, the compile and onnxruntime backends.

The parent side runs in this process (``main``); every measurement is a child process.
"""
import json
import os.path as osp
import sys

import pytest
import torch

from tests.helpers import ROOT, load_tool, official_state_dict, write_tiny_config

FIELDS = ('median_step_s', 'min_step_s', 'max_step_s', 'images_per_s', 'peak_memory_mib',
          'params_total', 'params_trainable', 'flops_per_step', 'achieved_gflops',
          'matmul_share')


@pytest.fixture(scope='module')
def benchmark():
    return load_tool('analysis_tools/benchmark')


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    """The demo model (LoRA rank 3 on q, v; linear head) with a 2-block, 64-wide ViT."""
    return write_tiny_config(tmp_path_factory.mktemp('benchmark') / 'tiny.py',
                             osp.join(ROOT, 'configs/demo/dinov2_lora_voc_demo.py'))


def run(benchmark, config, tmp_path, mode, *options, size=(56, 56)):
    """The JSON report of a 2-step, 1-round run at ``size`` with batch 2."""
    out = tmp_path / 'report.json'
    benchmark.main([str(config), '--mode', mode, '--batch-size', '2', '--img-size',
                    *map(str, size), '--iters', '2', '--warmup', '1', '--rounds', '1',
                    '--device', 'cpu', '--matmul-size', '512', '--json', str(out), *options])
    return json.loads(out.read_text())


def check_variant(result):
    for field in FIELDS:
        assert result[field] > 0, field
    assert len(result['step_times_s']) == 2
    assert result['min_step_s'] <= result['median_step_s'] <= result['max_step_s']
    assert result['params_trainable'] < result['params_total']


def check_reference(report, name):
    assert report['reference_name'] == name
    check_variant(report['reference'])
    ratios = {k: v for k, v in report.items() if 'ratio' in k and k != 'time_ratios'}
    assert set(ratios) == {'time_ratio', 'time_ratio_by_round', 'time_ratio_paired',
                           'memory_ratio'}
    assert set(report['time_ratios']) == {f'pytorch/{name}', f'{name}/pytorch'}
    assert report['time_ratios'][f'{name}/pytorch']['by_round'] == report['time_ratio_by_round']
    assert len(ratios.pop('time_ratio_by_round')) == report['rounds']
    assert all(v > 0 for v in ratios.values())
    ours, reference = report['ours'], report['reference']
    assert report['time_ratio'] == pytest.approx(reference['median_step_s'] / ours['median_step_s'])


def test_train_report_and_naive_attention_reference(benchmark, config, tmp_path):
    report = run(benchmark, config, tmp_path, 'train', '--reference', 'naive-attention')
    assert report['matmul_gflops'] > 0 and report['num_threads'] >= 1
    assert report['device_name'] and report['device'] == 'cpu'
    check_variant(report['ours'])
    check_reference(report, 'naive-attention')
    ours, naive = report['ours'], report['reference']
    assert ours['params_total'] == naive['params_total']
    # The CPU attention kernel is counted: it differs from the materialised attention
    # only by the scores torch counts as recomputed in its backward.
    assert 1 < ours['flops_per_step'] / naive['flops_per_step'] < 1.05


def test_merged_lora_inference_against_the_plain_backbone(benchmark, config, tmp_path):
    report = run(benchmark, config, tmp_path, 'infer', '--merge-lora', '--reference', 'no-lora')
    assert report['merge_lora']
    check_variant(report['ours'])
    check_reference(report, 'no-lora')
    ours, plain = report['ours'], report['reference']
    # Merged, the adapters cost nothing: same FLOPs as the model built without them.
    assert ours['flops_per_step'] == plain['flops_per_step']
    assert ours['params_total'] > plain['params_total']


def test_amp_and_activation_checkpointing_run(benchmark, config, tmp_path):
    report = run(benchmark, config, tmp_path, 'train', '--amp', '--with-cp')
    assert report['amp'] and report['with_cp'] and report['matmul_dtype'] == 'bfloat16'
    check_variant(report['ours'])


def test_timm_peft_reference(benchmark, config, tmp_path):
    report = run(benchmark, config, tmp_path, 'train', '--reference', 'timm-peft')
    check_reference(report, 'timm-peft')
    # Rank 3 on all of qkv has as many parameters as rank 3 on q and on v.
    assert report['reference']['params_trainable'] == report['ours']['params_trainable']
    assert any('peft cannot adapt' in note for note in report['notes'])


def test_timm_peft_reference_for_dinov3(benchmark, tmp_path):
    """timm's DINOv3 with peft against the DINOv3 demo model at a multiple of 16 pixels."""
    config = write_tiny_config(tmp_path / 'tiny_dinov3.py',
                               osp.join(ROOT, 'configs/demo/dinov3_lora_voc_demo.py'))
    report = run(benchmark, config, tmp_path, 'train', '--reference', 'timm-peft',
                 size=(64, 64))
    check_variant(report['ours'])
    check_reference(report, 'timm-peft')
    assert report['reference']['params_trainable'] == report['ours']['params_trainable']
    assert any('qkv_bias_separate' in note for note in report['notes'])


def test_compile_and_onnxruntime_backends(benchmark, config, tmp_path):
    report = run(benchmark, config, tmp_path, 'infer', '--backend', 'pytorch', 'compile',
                 'onnxruntime', size=(56, 84))
    assert report['backend'] == ['pytorch', 'compile', 'onnxruntime']
    results = report['backends']
    assert report['ours'] == results['pytorch'] and 'setup_s' not in results['pytorch']
    for name in ('compile', 'onnxruntime'):
        check_variant(results[name])
        # The same work: the eager step's FLOPs, and the model's parameters.
        assert results[name]['flops_per_step'] == results['pytorch']['flops_per_step']
        assert results[name]['params_total'] == results['pytorch']['params_total']
        assert results[name]['setup_s'] > 0  # compilation or export, reported
        ratio = report['time_ratios'][f'pytorch/{name}']
        assert ratio['pooled'] == pytest.approx(
            results['pytorch']['median_step_s'] / results[name]['median_step_s'])
    assert set(report['time_ratios']) == {'pytorch/compile', 'pytorch/onnxruntime'}


def test_clear_errors(benchmark, config, monkeypatch):
    common = [str(config), '--batch-size', '1', '--img-size', '50', '56']
    for wrong in (['--mode', 'train', '--merge-lora'], ['--mode', 'train', '--backend', 'compile'],
                  ['--mode', 'infer', '--backend', 'onnxruntime', '--amp'],
                  ['--mode', 'infer', '--backend', 'compile', 'compile']):
        with pytest.raises(SystemExit):
            benchmark.parse_args(common + wrong)
    with pytest.raises(ValueError, match='has no model.backbone.lora'):
        benchmark.main(common + ['--mode', 'infer', '--reference', 'no-lora',
                                 '--cfg-options', 'model.backbone.lora=None'])
    with pytest.raises(ValueError, match='multiples of 14'):
        benchmark.main(common + ['--mode', 'infer', '--reference', 'timm-peft'])
    monkeypatch.setitem(sys.modules, 'peft', None)
    with pytest.raises(ImportError, match="needs the package 'peft'"):
        benchmark.main(common[:-2] + ['56', '56', '--mode', 'infer', '--reference', 'timm-peft'])


def test_build_mode_times_building_from_the_file_against_reading_it(benchmark, config,
                                                                     tmp_path):
    weights = tmp_path / 'tiny.pth'
    torch.save(official_state_dict(64, 2, 4), weights)
    out = tmp_path / 'build.json'
    report = benchmark.main([str(config), '--mode', 'build', '--rounds', '2', '--json', str(out),
                             '--cfg-options', f'model.backbone.pretrained={weights}'])
    assert json.loads(out.read_text()) == report
    variants = report['variants']
    assert set(variants) == {'build', 'torch-load'}
    for summary in variants.values():
        assert len(summary['rounds_s']) == 2 and 0 < summary['min_s'] <= summary['max_s']
    ratio = report['build_over_torch_load']
    assert ratio['pooled'] == pytest.approx(variants['build']['median_s']
                                            / variants['torch-load']['median_s'])
    # without the file there is nothing to time
    with pytest.raises(SystemExit, match='missing.pth is not here'):
        benchmark.main([str(config), '--mode', 'build', '--cfg-options',
                        f'model.backbone.pretrained={tmp_path / "missing.pth"}'])
    with pytest.raises(SystemExit):
        benchmark.parse_args([str(config), '--mode', 'train'])  # needs --batch-size
