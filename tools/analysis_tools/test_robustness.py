"""Test a segmentor on ImageNet-C corruptions of its test set, severity by severity.

    python tools/analysis_tools/test_robustness.py CONFIG CHECKPOINT \
        [--corruptions fog snow] [--extra]

Runs the clean test set, then every corruption x severity (default: the 15 ImageNet-C
corruptions x severities 1-5; ``--extra`` adds the 4 extra ones) with ``ImageCorruption``
inserted right after ``LoadImageFromFile`` in the config's test pipeline (the pipeline of
every dataset in a ``ConcatDataset``), each with the mmengine Runner and the config's
evaluator as ``tools/test.py`` does. Writes to the work
dir (default ``work_dirs/<config>/robustness``; the Runner logs under ``runs/``):

- ``robustness.json`` and ``robustness.csv``: mIoU, aAcc and mAcc of every run;
- ``robustness.md``: mIoU table (corruptions x severities, means per severity and
  corruption, mean over all) and relative robustness = mean corrupted mIoU / clean mIoU;
- ``robustness.png``: mIoU against severity, one line per corruption family, the mean
  over all and the clean mIoU.

The results are saved after every run: a re-run with the same checkpoint content, config
content (with its options) and seed reuses them, so an interrupted sweep goes on where it
stopped; results of a checkpoint or config since changed at the same path are refused.
Runs on 1 process or under torchrun (``--launcher pytorch``), on the CPU too. The tables
and the plot are :mod:`dinolora_mmseg.visualization.robustness_report`.
"""
import argparse
import copy
import csv
import hashlib
import io
import json
import os
import os.path as osp

from mmengine.config import Config
from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.runner import Runner

from dinolora_mmseg.datasets import (
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    IMAGENET_C_CORRUPTIONS,
    SEVERITIES,
    leaf_configs,
)
from dinolora_mmseg.datasets.data_checks import check_test_dataloader
from dinolora_mmseg.engine.checkpoint_io import load_checkpoint_into
from dinolora_mmseg.engine.launch import add_common_args, prepare_launch
from dinolora_mmseg.utils.atomic_write import atomic_write_bytes
from dinolora_mmseg.utils.checkpoint_file import is_trusted
from dinolora_mmseg.utils.config import load_config
from dinolora_mmseg.utils.integrity import content_fingerprint
from dinolora_mmseg.visualization.robustness_report import (
    FAMILY,
    markdown,
    plot,
    relative,
    run_name,
    summarize,
)

METRICS = ('mIoU', 'aAcc', 'mAcc')
IDENTITY = ('checkpoint_sha256', 'config_sha256', 'seed')


def parse_args():
    parser = argparse.ArgumentParser(
        description='Test a segmentor on ImageNet-C corruptions of its test set')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--corruptions', nargs='+', choices=CORRUPTIONS, metavar='NAME',
                        help='corruptions to test (default: the 15 of ImageNet-C); one of '
                        + ', '.join(CORRUPTIONS))
    parser.add_argument('--severities', nargs='+', type=int, choices=SEVERITIES, metavar='N',
                        default=list(SEVERITIES), help='severities 1-5 (default: all)')
    parser.add_argument('--extra', action='store_true',
                        help='add the 4 extra corruptions: ' + ', '.join(EXTRA_CORRUPTIONS))
    parser.add_argument('--seed', type=int, default=0, help='seed of the corruptions')
    add_common_args(parser)
    args = parser.parse_args()
    corruptions = list(args.corruptions or IMAGENET_C_CORRUPTIONS)
    corruptions += list(EXTRA_CORRUPTIONS) if args.extra else []
    args.corruptions = list(dict.fromkeys(corruptions))
    args.severities = sorted(set(args.severities))
    return args


def corruption_index(pipeline) -> int:
    """Where ``ImageCorruption`` goes in ``pipeline``: right after ``LoadImageFromFile``."""
    types = [t['type'] if isinstance(t['type'], str) else t['type'].__name__ for t in pipeline]
    if 'ImageCorruption' in types:
        raise ValueError(f'the test pipeline is already corrupted ({types}); pass the config '
                         'of the clean test set')
    if 'LoadImageFromFile' not in types:
        raise ValueError(f'the test pipeline has no LoadImageFromFile step to put '
                         f'ImageCorruption after: {types}')
    return types.index('LoadImageFromFile') + 1


def dataset_pipelines(cfg: Config) -> list:
    """The pipelines of the datasets of the test dataloader (several in a wrapper)."""
    return [dataset.setdefault('pipeline', []) for _, dataset in
            leaf_configs(cfg.test_dataloader.dataset, 'test_dataloader.dataset')]


def corrupt_test_set(cfg: Config, corruption: str, severity: int, seed: int) -> None:
    """Put ``ImageCorruption`` into every test pipeline of ``cfg``, after the image loads."""
    for pipeline in dataset_pipelines(cfg):
        pipeline.insert(corruption_index(pipeline), dict(
            type='ImageCorruption', corruption=corruption, severity=severity, seed=seed))


def run_test(cfg: Config, checkpoint: str, work_dir: str, corruption: str, severity: int,
             seed: int) -> dict:
    """mIoU, aAcc and mAcc of ``checkpoint`` on the test set of ``cfg``, corrupted unless
    ``corruption`` is 'clean', with the Runner as ``tools/test.py`` does."""
    cfg = copy.deepcopy(cfg)
    name = run_name(corruption, severity)
    cfg.work_dir = osp.join(work_dir, 'runs', name)
    cfg.experiment_name = name  # the Runner's logger, hub and visualizer are named by it
    # Runners are freed by the garbage collector, late: persistent workers would linger
    # until then and take 5 s each to stop.
    cfg.test_dataloader.persistent_workers = False
    if corruption != 'clean':
        corrupt_test_set(cfg, corruption, severity, seed)
    runner = Runner.from_cfg(cfg)
    load_checkpoint_into(runner, checkpoint, strict=True, trusted=is_trusted(cfg, checkpoint))
    metrics = runner.test()
    if any(m not in metrics for m in METRICS):
        raise KeyError(f'the test evaluator gives {sorted(metrics)}; {METRICS} are needed '
                       "(MMSeg's IoUMetric with iou_metrics=['mIoU'])")
    return {m: round(float(metrics[m]), 2) for m in METRICS}  # IoUMetric's float32, 2 digits


def order(result: dict) -> tuple:
    corruption = result['corruption']
    return (-1 if corruption == 'clean' else CORRUPTIONS.index(corruption), result['severity'])


def save(path: str, write) -> None:
    """Write what ``write(file)`` writes to ``path`` atomically, unless the content is
    unchanged (then ``path`` keeps its modification time)."""
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getvalue()
    if osp.exists(path):
        with open(path, 'rb') as old:
            if old.read() == data:
                return
    atomic_write_bytes(path, data)


def save_results(work_dir: str, key: dict, results: dict, summary=None) -> None:
    rows = [dict(corruption=r['corruption'], family=FAMILY.get(r['corruption'], 'clean'),
                 severity=r['severity'], **{m: r[m] for m in METRICS})
            for r in sorted(results.values(), key=order)]
    content = dict(key, results=rows, **({} if summary is None else dict(summary=summary)))
    save(osp.join(work_dir, 'robustness.json'),
         lambda f: f.write(json.dumps(content, indent=2).encode() + b'\n'))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    save(osp.join(work_dir, 'robustness.csv'), lambda f: f.write(text.getvalue().encode()))


def results_key(cfg: Config, args) -> dict:
    """What the results depend on: the checkpoint's and the config's content and the seed
    (identity), and the paths and options they came from (for the reader)."""
    settings = cfg.to_dict()
    settings.pop('work_dir', None)
    config_text = json.dumps(settings, sort_keys=True, default=repr)
    return json.loads(json.dumps(dict(  # as it reads back from the JSON file (no tuples)
        config=osp.abspath(args.config), checkpoint=osp.abspath(args.checkpoint),
        seed=args.seed, cfg_options=args.cfg_options or {},
        config_sha256=hashlib.sha256(config_text.encode()).hexdigest(),
        checkpoint_sha256=content_fingerprint(args.checkpoint))))


def load_results(work_dir: str, key: dict) -> dict:
    """The finished runs in ``robustness.json``, by run name, if they are of the same
    checkpoint content, config content and seed as ``key``."""
    path = osp.join(work_dir, 'robustness.json')
    if not osp.exists(path):
        return {}
    with open(path) as f:
        content = json.load(f)
    old, new = ({k: held.get(k) for k in IDENTITY} for held in (content, key))
    if old != new:
        differ = ', '.join(k for k in IDENTITY if old[k] != new[k])
        raise ValueError(f'{path} holds the results of {old}, not of {new} ({differ} differ: '
                         f'{content.get("checkpoint")} / {content.get("config")} then, '
                         f'{key["checkpoint"]} / {key["config"]} now); use another '
                         '--work-dir or delete it')
    return {run_name(r['corruption'], r['severity']): r for r in content['results']}


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    work_dir = args.work_dir or osp.join(cfg.work_dir, 'robustness')
    for pipeline in dataset_pipelines(cfg):
        corruption_index(pipeline)  # fail before any run
    cfg.load_from = None  # loaded strictly by run_test
    key = results_key(cfg, args)
    prepare_launch(cfg, args.launcher, args.device)  # first: data checked once, on rank 0
    check_test_dataloader(cfg, args.launcher)
    main_process = is_main_process()
    loaded = [None]
    if main_process:
        os.makedirs(work_dir, exist_ok=True)
        try:
            loaded[0] = load_results(work_dir, key)
        except ValueError as error:
            loaded[0] = str(error)
    broadcast_object_list(loaded)  # every rank runs the same list, or stops
    if isinstance(loaded[0], str):
        raise ValueError(loaded[0])
    results = loaded[0]
    runs = [('clean', 0)] + [(c, s) for c in args.corruptions for s in args.severities]
    for i, (corruption, severity) in enumerate(runs, 1):
        reused = run_name(corruption, severity) in results
        if not reused:
            metrics = run_test(cfg, args.checkpoint, work_dir, corruption, severity,
                               args.seed)
            results[run_name(corruption, severity)] = dict(
                corruption=corruption, severity=severity, **metrics)
            if main_process:
                save_results(work_dir, key, results)
        if main_process:
            label = 'clean' if corruption == 'clean' else f'{corruption} severity {severity}'
            print(f"[{i}/{len(runs)}] {label}: mIoU "
                  f"{results[run_name(corruption, severity)]['mIoU']:.2f}"
                  + (' (reused)' if reused else ''), flush=True)
    if main_process:
        summary = summarize(results, args.corruptions, args.severities)
        save_results(work_dir, key, results, summary)
        save(osp.join(work_dir, 'robustness.md'),
             lambda f: f.write(markdown(key, results, summary).encode()))
        save(osp.join(work_dir, 'robustness.png'), lambda f: plot(key, results, summary, f))
        print(f"Clean mIoU {summary['clean_mIoU']:.2f}, mean corrupted mIoU "
              f"{summary['mean_mIoU']:.2f}, relative robustness {relative(summary)}; "
              f'results in {work_dir}', flush=True)


if __name__ == '__main__':
    main()
