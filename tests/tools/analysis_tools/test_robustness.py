"""tools/analysis_tools/test_robustness.py on demo data: its files agree, re-runs reuse, 2
processes agree."""
import argparse
import csv
import json
import os
import re
import shutil
import subprocess

import pytest
import torch
from mmengine.config import Config

from tests.helpers import (PYTHON, ROOT, free_port, load_tool, logged_metrics, run_tool,
                           write_tiny_config)

CORRUPTIONS = ('gaussian_noise', 'fog')
SEVERITIES = (1, 5)
FILES = ('robustness.json', 'robustness.csv', 'robustness.md', 'robustness.png')
TOOL = 'tools/analysis_tools/test_robustness.py'
tool = load_tool('analysis_tools/test_robustness')


def sweep(config, checkpoint, work_dir, *options, **kwargs):
    return run_tool(PYTHON, TOOL, config, checkpoint, '--work-dir',
                    work_dir, *options, **kwargs)


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp('robustness')
    run_tool(PYTHON, 'tools/misc/make_demo_data.py', root / 'data', '--format', 'voc',
             '--num-train', 8, '--num-val', 4)
    config = write_tiny_config(root / 'tiny.py', f'{ROOT}/configs/demo/dinov2_lora_voc_demo.py',
                               root / 'data/VOCdevkit/VOC2012', embed_dims=96,
                               train_cfg='dict(max_iters=40, val_interval=40)',
                               default_hooks='dict(checkpoint=dict(interval=40))')
    train = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', root / 'train')
    checkpoint = (root / 'train' / 'last_checkpoint').read_text().strip()
    work = root / 'sweep'
    output = sweep(config, checkpoint, work, '--corruptions', *CORRUPTIONS, '--severities',
                   *SEVERITIES)
    return dict(root=root, config=config, checkpoint=checkpoint, work=work, output=output,
                val=logged_metrics(train, 'val'))


def read(work):
    content = json.loads((work / 'robustness.json').read_text())
    return content, {(r['corruption'], r['severity']): r for r in content['results']}


def test_sweep_writes_table_json_csv_and_plot_that_agree(swept):
    work, output = swept['work'], swept['output']
    content, results = read(work)
    runs = [('clean', 0)] + [(c, s) for c in CORRUPTIONS for s in SEVERITIES]
    assert list(results) == runs
    assert content['seed'] == 0 and content['checkpoint'] == swept['checkpoint']
    # the clean run is tools/train.py's validation: same data, pipeline and metric
    assert {m: results['clean', 0][m] for m in swept['val']} == swept['val']
    for i, (c, s) in enumerate(runs, 1):
        label = 'clean' if c == 'clean' else f'{c} severity {s}'
        assert f"[{i}/5] {label}: mIoU {results[c, s]['mIoU']:.2f}\n" in output
        if c != 'clean':  # the Runner really tested the corrupted pipeline
            log = re.sub(r'\s', '', next((work / 'runs' / f'{c}_{s}').rglob('*.log')).read_text())
            assert f"dict(corruption='{c}',seed=0,severity={s},type='ImageCorruption')" in log
    with open(work / 'robustness.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(r['corruption'], int(r['severity'])) for r in rows] == runs
    for row in rows:
        for metric in ('mIoU', 'aAcc', 'mAcc'):
            assert float(row[metric]) == results[row['corruption'], int(row['severity'])][metric]
    summary = content['summary']
    table = {c: [results[c, s]['mIoU'] for s in SEVERITIES] for c in CORRUPTIONS}
    mean = sum(map(sum, table.values())) / 4
    assert summary['mean_mIoU'] == pytest.approx(mean, abs=0.006)
    assert summary['relative_robustness'] == pytest.approx(mean / results['clean', 0]['mIoU'],
                                                           abs=1e-4)
    markdown = (work / 'robustness.md').read_text()
    for c, values in table.items():
        cells = [f'{v:.2f}' for v in values] + [f'{sum(values) / 2:.2f}']
        assert f"| {c} | {'noise' if c == 'gaussian_noise' else 'weather'} | " \
               + ' | '.join(cells) + ' |' in markdown
    per_severity = [f'{(table[CORRUPTIONS[0]][i] + table[CORRUPTIONS[1]][i]) / 2:.2f}'
                    for i in range(2)]
    assert '| **mean** | | ' + ' | '.join(per_severity) + f' | **{mean:.2f}** |' in markdown
    assert f"Clean mIoU: {results['clean', 0]['mIoU']:.2f}." in markdown
    assert f"(mean corrupted / clean): {summary['relative_robustness']:.4f}." in markdown
    png = (work / 'robustness.png').read_bytes()
    assert png.startswith(b'\x89PNG') and len(png) < 200_000
    # the strongest noise does hurt
    assert results['gaussian_noise', 5]['aAcc'] != results['clean', 0]['aAcc']


def test_rerun_reuses_finished_runs_and_resumes_a_stopped_sweep(swept):
    work, args = swept['work'], (swept['config'], swept['checkpoint'], swept['work'],
                                 '--corruptions', *CORRUPTIONS, '--severities', *SEVERITIES)
    stamps = {name: os.stat(work / name).st_mtime_ns for name in FILES}
    logs = sorted(p.name for p in (work / 'runs').rglob('*'))
    output = sweep(*args)
    assert output.count('(reused)') == 5 and 'Iter(test)' not in output
    assert {name: os.stat(work / name).st_mtime_ns for name in FILES} == stamps
    assert sorted(p.name for p in (work / 'runs').rglob('*')) == logs
    # a sweep stopped before fog severity 5: only that run is done again, to the same numbers
    content, results = read(work)
    stopped = dict(content, results=content['results'][:-1])
    del stopped['summary']
    (work / 'robustness.json').write_text(json.dumps(stopped))
    output = sweep(*args)
    assert output.count('(reused)') == 4 and output.count('Iter(test)') >= 1
    assert '[5/5] fog severity 5: mIoU' in output
    assert read(work) == (content, results)


def test_two_processes_give_the_same_numbers(swept):
    work = swept['root'] / 'sweep2'
    output = run_tool(PYTHON, '-m', 'torch.distributed.run', '--nproc_per_node', 2,
                      '--master_addr', '127.0.0.1', '--master_port', free_port(),
                      TOOL, swept['config'], swept['checkpoint'],
                      '--work-dir', work, '--corruptions', 'gaussian_noise', '--severities', 5,
                      '--launcher', 'pytorch')
    assert 'rank 0 of 2 runs on the CPU with the gloo backend' in output
    assert output.count('[2/2] gaussian_noise severity 5: mIoU') == 1  # rank 0 alone prints
    _, double = read(work)
    _, single = read(swept['work'])
    assert double == {k: single[k] for k in [('clean', 0), ('gaussian_noise', 5)]}


def test_results_of_another_seed_are_not_mixed_in(swept):
    content, results = read(swept['work'])
    key = {k: content[k] for k in tool.IDENTITY + ('config', 'checkpoint', 'cfg_options')}
    assert len(tool.load_results(str(swept['work']), key)) == len(results)
    with pytest.raises(ValueError, match=r"robustness.json holds the results of .*'seed': 0.*"
                                         r"not of .*'seed': 1.*use another --work-dir"):
        tool.load_results(str(swept['work']), dict(key, seed=1))


def test_results_follow_the_checkpoint_content_not_its_path(swept, tmp_path):
    work, checkpoint = tmp_path / 'sweep', tmp_path / 'ckpt.pth'
    shutil.copytree(swept['work'], work)
    content = json.loads((work / 'robustness.json').read_text())
    (work / 'robustness.json').write_text(json.dumps(dict(content, checkpoint=str(checkpoint))))
    state = torch.load(swept['checkpoint'], weights_only=True)
    state['state_dict']['decode_head.conv_seg.bias'] += 1
    torch.save(state, checkpoint)  # not the checkpoint these results are of, at their path
    args = ('--corruptions', 'gaussian_noise', '--severities', 1)
    result = subprocess.run([PYTHON, TOOL, swept['config'], checkpoint,
                             '--work-dir', work, *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0 and '(reused)' not in result.stdout
    assert 'robustness.json holds the results of' in result.stderr
    assert '(checkpoint_sha256 differ' in result.stderr
    shutil.copy(swept['checkpoint'], tmp_path / 'moved.pth')  # theirs, at another path
    assert sweep(swept['config'], tmp_path / 'moved.pth', work, *args).count('(reused)') == 2


def test_results_follow_the_config_content(swept):
    args = argparse.Namespace(config=str(swept['config']), checkpoint=swept['checkpoint'],
                              seed=0, cfg_options=None)
    cfg = Config.fromfile(swept['config'])
    key = tool.results_key(cfg, args)
    cfg.work_dir = 'elsewhere'  # where results go, not what they depend on
    assert tool.results_key(cfg, args) == key
    cfg.model.test_cfg.mode = 'slide'
    assert tool.results_key(cfg, args)['config_sha256'] != key['config_sha256']


def test_corruption_goes_right_after_loading_the_image():
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize'), dict(type='PackSegInputs')]
    assert tool.corruption_index(pipeline) == 1
    with pytest.raises(ValueError, match=r"no LoadImageFromFile .*\['Resize', 'PackSegInputs'\]"):
        tool.corruption_index(pipeline[1:])
    with pytest.raises(ValueError, match='already corrupted'):
        tool.corruption_index(pipeline[:1] + [dict(type='ImageCorruption')] + pipeline[1:])


def test_every_dataset_of_a_concatenated_test_set_is_corrupted():
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]
    cfg = Config(dict(test_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[
        dict(type='PascalVOCDataset', pipeline=pipeline),
        dict(type='RepeatDataset', dataset=dict(type='PascalVOCDataset', pipeline=pipeline))]))))
    tool.corrupt_test_set(cfg, 'fog', 3, seed=0)
    datasets = cfg.test_dataloader.dataset.datasets
    for dataset in (datasets[0], datasets[1].dataset):
        assert [step['type'] for step in dataset.pipeline] == [
            'LoadImageFromFile', 'ImageCorruption', 'PackSegInputs']
        assert dataset.pipeline[1] == dict(type='ImageCorruption', corruption='fog', severity=3,
                                           seed=0)
