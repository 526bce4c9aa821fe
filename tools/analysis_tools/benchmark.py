"""Time training steps or inference of a segmentor: speed, memory, FLOPs, references;
or the time to build its backbone from the pretrained file.

    python tools/analysis_tools/benchmark.py CONFIG --mode {train,infer} --batch-size B \
        --img-size H W [--amp] [--with-cp] [--merge-lora] [--iters N] [--warmup N] [--rounds R] \
        [--memory-steps N] [--backend {pytorch,compile,onnxruntime} ...] \
        [--reference {timm-peft,naive-attention,no-lora}] [--json OUT] [--cfg-options ...]
    python tools/analysis_tools/benchmark.py CONFIG --mode build [--rounds R] [--json OUT] \
        [--cfg-options model.backbone.pretrained=FILE ...]

``--mode build`` times building the config's backbone from its ``pretrained`` file
against ``torch.load`` of that file, each in a fresh child process per round,
alternating (the file in the page cache for both after the first); ``build_over_torch_load``
is the ratio of the times.

The model of CONFIG (random backbone weights when its ``pretrained`` file is not
here) runs on random inputs in a fresh child process per measurement (this script with
``--worker``): ``train`` is a whole training step (forward with a random label map,
loss, backward, the config's optimizer step; only trainable parameters get gradients
and optimizer state), ``infer`` a ``torch.no_grad()`` forward to full-size logits.

Reported: median, min/max and IQR of the step time over ``--iters`` timed steps after
``--warmup`` steps, images/s, peak memory (on a GPU ``max_memory_allocated`` over the
timed steps; on the CPU, the growth of the peak RSS during ``--memory-steps`` steps over
the RSS between steps, in one more child per variant whose glibc maps every block of
128 KiB or more on its own, so that the RSS follows the live tensors), parameter counts, the
FLOPs of one step as ``FlopCounterMode`` counts them (matmuls, convolutions,
attention; backward included) and their share of this machine's matrix-multiply rate,
measured in the same run (the fastest of the products timed before and after
the measurements).

``--backend`` runs our inference eagerly (``pytorch``, the default), through
``torch.compile`` with inductor's weight freezing (``compile``), or exported to ONNX and
run by onnxruntime on the CPU (``onnxruntime``: LoRA folded in, normalisation in the
graph); several backends are measured alternating in each round, and ``setup_s`` is
the time of the compilation or export (with the first step). FLOPs are those of the
eager step for every backend. onnxruntime's memory arena, which keeps the memory of a
step for the next, is off where its peak memory is measured.

``--reference`` measures another implementation of the same workload (eagerly),
alternating with ours in each of ``--rounds`` rounds (ours, reference, ours, reference, ...):
``timm-peft`` is timm's DINOv2 or DINOv3 with HF peft LoRA on the fused ``qkv`` and a
1x1-conv head; ``naive-attention`` is our model with attention as the materialised
softmax(QK^T / sqrt(d)) V; ``no-lora`` is our model without its LoRA adapters (the
plain backbone that ``--merge-lora`` inference should cost the same as).

``time_ratios`` has ``'A/B'`` (time of A over time of B; above 1, B is faster) for the
first backend and the reference against every other variant: of the medians over all
rounds (``pooled``) and the median of each round's own ratio (``paired``).
``time_ratio``, ``time_ratio_paired`` and ``memory_ratio`` are reference / first backend.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction

from dinolora_mmseg.benchmark.build_time import (BUILD_VARIANTS, summarise_build_times,
                                                 time_build_variant)
from dinolora_mmseg.benchmark.measure import (MEMORY_CHILD_ENV, cpu_model, proc_status_bytes,
                                              reset_peak_rss, trim_freed_memory)
from dinolora_mmseg.benchmark.references import (REFERENCES, check_reference,
                                                 naive_attention_forward)
from dinolora_mmseg.benchmark.report import print_report, summarise, time_ratios
from dinolora_mmseg.benchmark.workloads import BACKENDS, build_workload
from dinolora_mmseg.models.utils import Attention
from dinolora_mmseg.utils.atomic_write import atomic_write_bytes
from dinolora_mmseg.utils.config import load_config
from dinolora_mmseg.utils.timing import matmul_rate, synchronize, time_steps
from dinolora_mmseg.utils.weights import hub_cache_path, is_url


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark a segmentor on random inputs')
    parser.add_argument('config', help='config file of the model')
    parser.add_argument('--mode', choices=['train', 'infer', 'build'], required=True)
    parser.add_argument('--batch-size', type=int, help='required for train and infer')
    parser.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='required for train and infer')
    parser.add_argument('--amp', action='store_true', help='bfloat16 autocast (CPU and GPU)')
    parser.add_argument('--with-cp', action='store_true',
                        help='activation checkpointing of each backbone block')
    parser.add_argument('--merge-lora', action='store_true',
                        help='fold the LoRA adapters into the weights first (infer only)')
    parser.add_argument('--iters', type=int, default=10, help='timed steps per round')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps before them')
    parser.add_argument('--memory-steps', type=int, default=2,
                        help='steps that measure peak memory on the CPU, after the warm-up')
    parser.add_argument('--rounds', type=int, default=2,
                        help='measurement rounds, each a fresh process per variant')
    parser.add_argument('--backend', nargs='+', choices=BACKENDS, default=['pytorch'],
                        help='how to run our model (infer only for compile and onnxruntime); '
                        'several are measured side by side')
    parser.add_argument('--reference', choices=REFERENCES,
                        help='also measure this implementation of the same workload')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--matmul-size', type=int,
                        help='side of the square matmuls that measure the machine '
                        '(default 2048 on a CPU, 8192 on a GPU)')
    parser.add_argument('--json', help='write the report to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    # Internal: run one measurement in this (child) process and write it to a file.
    parser.add_argument('--worker', choices=BACKENDS + REFERENCES + BUILD_VARIANTS,
                        help=argparse.SUPPRESS)
    parser.add_argument('--worker-out', help=argparse.SUPPRESS)
    parser.add_argument('--worker-flops', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--worker-memory', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == 'build':
        args.batch_size, args.img_size = 1, (1, 1)  # unused
    elif args.batch_size is None or args.img_size is None:
        parser.error(f'--mode {args.mode} needs --batch-size and --img-size')
    numbers = dict(batch_size=args.batch_size, iters=args.iters, rounds=args.rounds,
                   img_size=min(args.img_size), memory_steps=args.memory_steps)
    if args.matmul_size is not None:
        numbers['matmul_size'] = args.matmul_size
    for name, value in numbers.items():
        if value < 1:
            parser.error(f'--{name.replace("_", "-")} must be positive, got {value}')
    if args.warmup < 0:
        parser.error(f'--warmup must not be negative, got {args.warmup}')
    if args.merge_lora and args.mode != 'infer':
        parser.error('--merge-lora applies to --mode infer only')
    if len(set(args.backend)) != len(args.backend):
        parser.error(f'--backend names a backend twice: {args.backend}')
    others = [b for b in args.backend if b != 'pytorch']
    if others and args.mode != 'infer':
        parser.error(f'--backend {others[0]} applies to --mode infer only')
    if 'onnxruntime' in args.backend and (args.amp or args.device != 'cpu'):
        parser.error('--backend onnxruntime runs in float32 on the CPU: no --amp, --device cpu')
    return args


def weights_available(path: str) -> bool:
    """Whether ``path`` (a file, or a URL already in the torch hub cache) is here."""
    return os.path.isfile(hub_cache_path(path) if is_url(path) else path)


def benchmark_config(args: argparse.Namespace) -> Tuple[Config, List[str]]:
    """The config with the command line applied, and notes on what was changed."""
    cfg = load_config(args.config, args.cfg_options)
    notes = []
    backbone = cfg.model.backbone
    pretrained = backbone.get('pretrained')
    if pretrained and not weights_available(pretrained):
        backbone.pretrained = None
        notes.append(f'{pretrained} is not here: random backbone weights '
                     '(the timings do not depend on them)')
    if args.with_cp:
        backbone.with_cp = True
    return cfg, notes


def run_worker(args: argparse.Namespace) -> Dict:
    """One measurement of ``args.worker`` in this process (the child's side).

    Times the steps (and on a GPU their peak memory) or, with ``args.worker_memory``, the
    peak RSS of ``args.memory_steps`` steps after the warm-up (CPU only).
    """
    if args.worker == 'naive-attention':
        Attention.forward = naive_attention_forward
    cfg, _ = benchmark_config(args)
    if args.mode == 'build':
        return dict(seconds=time_build_variant(cfg.model.backbone.to_dict(), args.worker))
    device = torch.device(args.device)
    ours = args.worker in BACKENDS
    workload = build_workload(cfg, 'ours' if ours else args.worker, args.mode, args.batch_size,
                              args.img_size, device, args.amp, args.merge_lora,
                              args.worker if ours else 'pytorch', args.worker_flops,
                              onnxruntime_arena=not args.worker_memory)
    if args.worker_memory:
        # One step at least: the optimizer state it creates is not the step's memory.
        for _ in range(max(args.warmup, 1)):
            workload.step()
        trim_freed_memory()
        baseline = reset_peak_rss()
        for _ in range(args.memory_steps):
            workload.step()
        return dict(peak_memory_bytes=proc_status_bytes('VmHWM') - baseline,
                    baseline_memory_bytes=baseline)
    result = dict(params_total=workload.params_total,
                  params_trainable=workload.params_trainable,
                  flops_per_step=workload.flops_per_step, setup_s=workload.setup_s,
                  num_threads=torch.get_num_threads())
    if device.type == 'cuda':
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result.update(baseline_memory_bytes=torch.cuda.memory_allocated(device))
    result.update(step_times_s=time_steps(workload.step, args.iters, args.warmup, device))
    if device.type == 'cuda':
        result.update(peak_memory_bytes=torch.cuda.max_memory_allocated(device))
    return result


def measure_child(argv: Sequence[str], variant: str, count: bool = False,
                  memory: bool = False) -> Dict:
    """Run one measurement of ``variant`` in a fresh process; its :func:`run_worker` result.

    Args:
        argv: The command line of this run.
        variant: A backend of ours or a reference.
        count: Also count the FLOPs of a step.
        memory: Measure the CPU peak memory (in a process with :data:`MEMORY_CHILD_ENV`)
            instead of the time.

    Raises:
        RuntimeError: The child failed; the message holds the end of its output.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'result.json')
        command = [sys.executable, os.path.abspath(__file__), *argv, '--worker', variant,
                   '--worker-out', out] + (['--worker-flops'] if count else []) + (
                       ['--worker-memory'] if memory else [])
        env = dict(os.environ, **MEMORY_CHILD_ENV) if memory else None
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f'The {variant} measurement failed (exit code '
                               f'{result.returncode}):\n{result.stdout[-4000:]}')
        with open(out) as f:
            return json.load(f)


def save_report(report: Dict, path: str) -> None:
    """Write ``report`` as JSON to ``path`` (atomically; its folder created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, json.dumps(report, indent=2).encode())
    print(f'wrote {path}')


def build_report(argv: Sequence[str], args: argparse.Namespace) -> Dict:
    """``--mode build``: building the backbone from its pretrained file against
    ``torch.load`` of the file, alternating fresh child processes for ``--rounds`` rounds."""
    cfg, notes = benchmark_config(args)
    if not cfg.model.backbone.get('pretrained'):
        raise SystemExit('--mode build times building from the pretrained file: '
                         + ('; '.join(notes) or 'the config has no model.backbone.pretrained'))
    times = {variant: [] for variant in BUILD_VARIANTS}
    for index in range(args.rounds):
        for variant in BUILD_VARIANTS[::-1] if index % 2 else BUILD_VARIANTS:
            print(f'round {index + 1}/{args.rounds}: {variant}', flush=True)
            times[variant].append(measure_child(argv, variant)['seconds'])
    report = dict(config=args.config, mode='build', rounds=args.rounds,
                  cfg_options=args.cfg_options, device_name=cpu_model(),
                  torch=torch.__version__, **summarise_build_times(times))
    for variant, summary in report['variants'].items():
        print(f'{variant}: median {summary["median_s"]:.3f} s (min {summary["min_s"]:.3f}, '
              f'max {summary["max_s"]:.3f})')
    ratio = report['build_over_torch_load']
    print(f'build / torch.load: {ratio["pooled"]:.3f} (of medians), {ratio["paired"]:.3f} '
          '(median of the rounds\' ratios)')
    if args.json:
        save_report(report, args.json)
    return report


def main(argv: Optional[Sequence[str]] = None) -> Optional[Dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        with open(args.worker_out, 'w') as f:
            json.dump(run_worker(args), f)
        return None
    if args.mode == 'build':
        return build_report(argv, args)

    cfg, notes = benchmark_config(args)
    if args.reference:
        notes += check_reference(cfg, args.reference, args.img_size, args.config)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.amp else torch.float32
    size = args.matmul_size or (8192 if device.type == 'cuda' else 2048)
    rate_before = matmul_rate(device, dtype, size)
    variants = args.backend + ([args.reference] if args.reference else [])
    runs = {variant: [] for variant in variants}
    for index in range(args.rounds):
        # Alternate which variant goes first, so that neither always runs right after
        # the other's process ends (or after the matmul measurement).
        for variant in variants[::-1] if index % 2 else variants:
            print(f'round {index + 1}/{args.rounds}: {variant}', flush=True)
            runs[variant].append(measure_child(argv, variant, count=index == 0))
    memory = {}
    for variant in variants:
        if device.type == 'cpu':
            print(f'peak memory: {variant}', flush=True)
            memory[variant] = measure_child(argv, variant, memory=True)
        else:
            memory[variant] = max(runs[variant], key=lambda run: run['peak_memory_bytes'])
    # Measured before and after the children: a machine busy at one of the two
    # moments (e.g. still releasing a finished process's memory) does not lower it.
    rate = max(rate_before, matmul_rate(device, dtype, size))

    report = dict(
        config=args.config, mode=args.mode, batch_size=args.batch_size,
        img_size=list(args.img_size), amp=args.amp, with_cp=args.with_cp,
        merge_lora=args.merge_lora, iters=args.iters, warmup=args.warmup, rounds=args.rounds,
        memory_steps=args.memory_steps,
        device=device.type, torch=torch.__version__,
        device_name=(torch.cuda.get_device_name(device) if device.type == 'cuda'
                     else cpu_model()),
        backend=args.backend, num_threads=runs[args.backend[0]][0]['num_threads'],
        matmul_dtype=str(dtype).replace('torch.', ''), matmul_size=size, matmul_gflops=rate,
        memory_measure=('torch.cuda.max_memory_allocated during the steps (weights included)'
                        if device.type == 'cuda' else
                        f'growth of the peak RSS (VmHWM) during {args.memory_steps} step(s) '
                        'over the RSS between steps, blocks of 128 KiB or more unmapped when '
                        'freed'),
        notes=notes,
        backends={b: summarise(runs[b], memory[b], args.batch_size, rate) for b in args.backend},
        time_ratios=time_ratios(runs, args.backend[:1] + variants[len(args.backend):]))
    report['ours'] = report['backends'][args.backend[0]]
    if args.reference:
        ours = report['ours']
        reference = report['reference'] = summarise(runs[args.reference], memory[args.reference],
                                                    args.batch_size, rate)
        report['reference_name'] = args.reference
        ratio = report['time_ratios'][f'{args.reference}/{args.backend[0]}']
        report.update(time_ratio=ratio['pooled'], time_ratio_by_round=ratio['by_round'],
                      time_ratio_paired=ratio['paired'],
                      memory_ratio=(reference['peak_memory_mib'] / ours['peak_memory_mib']
                                    if ours['peak_memory_mib'] > 0 else None))
    print_report(report)
    if args.json:
        save_report(report, args.json)
    return report


if __name__ == '__main__':
    main()
