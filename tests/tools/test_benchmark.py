"""tools/benchmark.py on a tiny model: complete reports, both references, the fast paths.

The parent side runs in this process (``main``); every measurement is a child process.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.helpers import ROOT, load_tool, write_tiny_config

FIELDS = ('median_step_s', 'min_step_s', 'max_step_s', 'images_per_s', 'peak_memory_mib',
          'params_total', 'params_trainable', 'flops_per_step', 'achieved_gflops',
          'matmul_share')


@pytest.fixture(scope='module')
def benchmark():
    return load_tool('benchmark')


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
    ratios = {k: v for k, v in report.items() if 'ratio' in k}
    assert set(ratios) == {'time_ratio', 'time_ratio_by_round', 'time_ratio_paired',
                           'memory_ratio'}
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


def test_clear_errors(benchmark, config, monkeypatch):
    common = [str(config), '--batch-size', '1', '--img-size', '50', '56']
    with pytest.raises(SystemExit):
        benchmark.parse_args(common + ['--mode', 'train', '--merge-lora'])
    with pytest.raises(ValueError, match='has no model.backbone.lora'):
        benchmark.main(common + ['--mode', 'infer', '--reference', 'no-lora',
                                 '--cfg-options', 'model.backbone.lora=None'])
    with pytest.raises(ValueError, match='multiples of 14'):
        benchmark.main(common + ['--mode', 'infer', '--reference', 'timm-peft'])
    monkeypatch.setitem(sys.modules, 'peft', None)
    with pytest.raises(ImportError, match="needs the package 'peft'"):
        benchmark.main(common[:-2] + ['56', '56', '--mode', 'infer', '--reference', 'timm-peft'])


FREED_BLOCK = """
import torch
from tests.helpers import load_tool
benchmark = load_tool('benchmark')
for _ in range(3):  # glibc's dynamic threshold would now keep 16 MiB blocks in the heap
    blocks = [torch.ones(2**22) for _ in range(4)]
    del blocks
benchmark.trim_freed_memory()
start = benchmark.reset_peak_rss()
tensor = torch.ones(2**22)
del tensor
print((benchmark.proc_status_bytes('VmHWM') - start) / 2**20,
      (benchmark.proc_status_bytes('VmRSS') - start) / 2**20)
"""


@pytest.mark.parametrize('memory_child', [True, False])
def test_cpu_peak_memory_follows_live_tensors(benchmark, memory_child):
    """In the memory child's environment, a new 16 MiB tensor shows in the peak RSS and
    leaves the RSS when freed, whatever blocks were freed before. In the default one the
    heap reuses freed blocks for it, resident (the peak misses it) or trimmed (it stays
    resident after it is freed)."""
    env = dict(os.environ, **benchmark.MEMORY_CHILD_ENV) if memory_child else None
    for _ in range(3):  # the heap's layout varies from run to run
        result = subprocess.run([sys.executable, '-c', FREED_BLOCK], cwd=ROOT, env=env,
                                capture_output=True, text=True, check=True)
        peak, after = map(float, result.stdout.split())
        assert (15 < peak < 17 and after < 1) == memory_child, (peak, after)
