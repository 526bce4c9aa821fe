"""Time training steps or inference of a segmentor: speed, memory, FLOPs, references.

    python tools/benchmark.py CONFIG --mode {train,infer} --batch-size B --img-size H W \
        [--amp] [--with-cp] [--merge-lora] [--iters N] [--warmup N] [--rounds R] \
        [--memory-steps N] \
        [--reference {timm-peft,naive-attention,no-lora}] [--json OUT] [--cfg-options ...]

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

``--reference`` measures another implementation of the same workload, alternating
with ours in each of ``--rounds`` rounds (ours, reference, ours, reference, ...):
``timm-peft`` is timm's DINOv2 with HF peft LoRA on the fused ``qkv`` and a 1x1-conv
head; ``naive-attention`` is our model with attention as the materialised
softmax(QK^T / sqrt(d)) V; ``no-lora`` is our model without its LoRA adapters (the
plain backbone that ``--merge-lora`` inference should cost the same as). Ratios are
reference / ours: of the medians over all rounds, and (``time_ratio_paired``) the
median of each round's own time ratio.
"""
import argparse
import copy
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn
from torch.utils.flop_counter import (FlopCounterMode, sdpa_backward_flop_count,
                                      sdpa_flop_count)

from dinolora_mmseg.models import merge_lora
from dinolora_mmseg.models.lora import lora_layers
from dinolora_mmseg.models.utils.dinov2_layers import Attention, linear_after_norm
from dinolora_mmseg.utils.weights import hub_cache_path, is_url

REFERENCES = ('timm-peft', 'naive-attention', 'no-lora')
# glibc maps blocks of 128 KiB and more on their own and unmaps them when freed, instead
# of moving large blocks into the heap, where freed memory stays resident and is reused
# unseen by the RSS. Only the memory child runs so: its steps are ~45 % slower.
MEMORY_CHILD_ENV = dict(MALLOC_MMAP_THRESHOLD_=str(128 * 1024))
TIMM_NAMES = dict(small='vit_small_patch14', base='vit_base_patch14',
                  large='vit_large_patch14', giant='vit_giant_patch14')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark a segmentor on random inputs')
    parser.add_argument('config', help='config file of the model')
    parser.add_argument('--mode', choices=['train', 'infer'], required=True)
    parser.add_argument('--batch-size', type=int, required=True)
    parser.add_argument('--img-size', type=int, nargs=2, required=True, metavar=('H', 'W'))
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
    parser.add_argument('--worker', choices=('ours', ) + REFERENCES, help=argparse.SUPPRESS)
    parser.add_argument('--worker-out', help=argparse.SUPPRESS)
    parser.add_argument('--worker-flops', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--worker-memory', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
    return args


def weights_available(path: str) -> bool:
    """Whether ``path`` (a file, or a URL already in the torch hub cache) is here."""
    return os.path.isfile(hub_cache_path(path) if is_url(path) else path)


def load_config(args: argparse.Namespace) -> Tuple[Config, List[str]]:
    """The config with the command line applied, and notes on what was changed."""
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
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


def check_reference(cfg: Config, args: argparse.Namespace) -> List[str]:
    """Refuse a reference that cannot run for ``cfg``; notes on how it differs from ours.

    Raises:
        ImportError: ``timm-peft`` without the ``timm`` or ``peft`` package.
        ValueError: The backbone is not DINOv2, timm-peft or no-lora without LoRA, or
            timm-peft with an image size that is not a multiple of the patch size.
    """
    backbone = cfg.model.backbone
    if backbone.type != 'DINOv2':
        raise ValueError(f'--reference {args.reference} replaces a DINOv2 backbone; '
                         f'{args.config} builds {backbone.type}')
    if args.reference == 'naive-attention':
        return ['naive-attention: our model with softmax(QK^T/sqrt(d))V materialised '
                'instead of F.scaled_dot_product_attention']
    lora = backbone.get('lora')
    if not lora:
        raise ValueError(f'--reference {args.reference} compares against LoRA adapters; '
                         f'{args.config} has no model.backbone.lora')
    if args.reference == 'no-lora':
        return ['no-lora: our model without model.backbone.lora']
    patch = backbone.get('patch_size', 14)
    if any(side % patch for side in args.img_size):
        raise ValueError(f'--reference timm-peft needs --img-size multiples of {patch} '
                         f'(timm does not pad), got {args.img_size}')
    import_timm_peft()
    return ['timm-peft: peft cannot adapt the q/k/v thirds of the fused qkv separately; '
            f'it adapts all of qkv with rank {lora.get("rank", 4)} (ours: '
            f'{", ".join(lora.get("targets", ("q", "v")))})',
            'timm-peft: timm builds its position embedding at the input size (no resizing '
            'in the forward pass, fewer parameters); ours resizes the trained grid each '
            'forward pass']


def import_timm_peft():
    """``(timm, peft)``, or an ImportError that names the missing package."""
    try:
        import peft
        import timm
    except ImportError as error:
        raise ImportError(f'--reference timm-peft needs the package {error.name!r}: '
                          f'pip install {error.name} (or pip install -e ".[bench]")') from error
    return timm, peft


def naive_attention_forward(self: Attention, x: torch.Tensor,
                            norm: Optional[nn.LayerNorm] = None) -> torch.Tensor:
    """``Attention.forward`` with the attention matrix materialised (the reference)."""
    B, N, C = x.shape
    qkv = linear_after_norm(self.qkv, x, norm).reshape(B, N, 3, self.num_heads,
                                                         C // self.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    weights = ((q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    return self.proj((weights @ v).transpose(1, 2).reshape(B, N, C))


class TimmPeftSegmentor(nn.Module):
    """The ``timm-peft`` reference: a peft-adapted timm ViT and a 1x1-conv head.

    Args:
        backbone (nn.Module): timm ``VisionTransformer`` wrapped by ``peft.get_peft_model``.
        num_classes (int): Output classes.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(backbone.embed_dim, num_classes, 1)

    def merge_lora(self) -> None:
        """Fold the adapters into the weights (peft's ``merge_and_unload``)."""
        self.backbone = self.backbone.merge_and_unload()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        p = self.backbone.patch_embed.patch_size[0]
        tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens:]
        features = tokens.transpose(1, 2).reshape(B, -1, H // p, W // p)
        return F.interpolate(self.head(features), size=(H, W), mode='bilinear',
                             align_corners=False)


def build_timm_peft(cfg: Config, img_size: Sequence[int]) -> TimmPeftSegmentor:
    """timm's DINOv2 of the config's arch and registers, peft LoRA on ``qkv``, 1x1 head."""
    timm, peft = import_timm_peft()
    backbone = cfg.model.backbone
    arch, reg = backbone.get('arch', 'large'), backbone.get('num_register_tokens', 0)
    if isinstance(arch, str):
        name, sizes = TIMM_NAMES[arch], {}
    else:
        name = 'vit_giant_patch14' if arch.get('ffn_type') == 'swiglu' else 'vit_small_patch14'
        sizes = dict(embed_dim=arch['embed_dims'], depth=arch['num_layers'],
                     num_heads=arch['num_heads'])
    vit = timm.create_model(name + ('_reg4_dinov2' if reg else '_dinov2'), pretrained=False,
                            num_classes=0, img_size=tuple(img_size), reg_tokens=reg, **sizes)
    vit.set_grad_checkpointing(backbone.get('with_cp', False))
    lora = backbone.lora
    layers = lora.get('layers')
    targets = ['qkv'] if layers is None else [
        f'blocks.{i % len(vit.blocks)}.attn.qkv' for i in layers]
    config = peft.LoraConfig(r=lora.get('rank', 4), lora_alpha=lora.get('alpha', 4.0),
                             lora_dropout=lora.get('dropout', 0.0), target_modules=targets)
    return TimmPeftSegmentor(peft.get_peft_model(vit, config),
                             cfg.model.decode_head.num_classes)


class Workload(NamedTuple):
    """A step to time and the parameter counts of the model it runs."""
    step: Callable[[], None]
    params_total: int
    params_trainable: int


def build_workload(cfg: Config, variant: str, mode: str, batch_size: int,
                   img_size: Sequence[int], device: torch.device, amp: bool = False,
                   merge: bool = False) -> Workload:
    """One training step or inference of ``variant`` on random inputs, as a callable.

    Args:
        cfg (Config): Config of our model (the references are built to match it).
        variant (str): ``'ours'`` or one of :data:`REFERENCES` (``naive-attention``
            expects ``Attention.forward`` already patched; ``no-lora`` ignores
            ``merge``).
        mode (str): ``'train'`` or ``'infer'``.
        batch_size (int): Images per step.
        img_size (Sequence[int]): ``(H, W)`` of the inputs.
        device (torch.device): Where to run.
        amp (bool): bfloat16 autocast of the forward pass and loss.
        merge (bool): Fold the LoRA adapters into the weights first.
    """
    H, W = img_size
    if variant == 'timm-peft':
        model = build_timm_peft(cfg, img_size)
    else:
        init_default_scope(cfg.get('default_scope', 'mmseg'))
        model_cfg = copy.deepcopy(cfg.model)
        if variant == 'no-lora':
            model_cfg.backbone.lora = None
            merge = False
        model = MODELS.build(model_cfg)
    params = list(model.parameters())
    params_total = sum(p.numel() for p in params)
    params_trainable = sum(p.numel() for p in params if p.requires_grad)
    if merge:
        if variant == 'timm-peft':
            model.merge_lora()
        elif next(lora_layers(model), None) is None:
            raise ValueError(f'--merge-lora: {cfg.filename} builds a model without LoRA adapters')
        else:
            merge_lora(model)
    model.to(device).train(mode == 'train')

    generator = torch.Generator(device).manual_seed(0)
    inputs = torch.randn(batch_size, 3, H, W, device=device, generator=generator)
    labels = torch.randint(cfg.model.decode_head.num_classes, (batch_size, H, W),
                           device=device, generator=generator)
    meta = dict(img_shape=(H, W), pad_shape=(H, W), ori_shape=(H, W))
    if variant == 'timm-peft':
        def logits():
            return model(inputs)

        def loss():
            return F.cross_entropy(model(inputs), labels, ignore_index=255)
    else:
        samples = [SegDataSample(metainfo=meta, gt_sem_seg=PixelData(data=label[None]))
                   for label in labels]

        def logits():
            return model.encode_decode(inputs, [meta] * batch_size)

        def loss():
            return model.parse_losses(model.loss(inputs, samples))[0]

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()

    if mode == 'infer':
        def step():
            with torch.no_grad(), autocast():
                logits()
    else:
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

        def step():
            with autocast():
                value = loss()
            optim_wrapper.update_params(value)
    return Workload(step, params_total, params_trainable)


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], iters: int, warmup: int,
               device: torch.device) -> List[float]:
    """Seconds of each of ``iters`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """GFLOP/s of a ``size`` x ``size`` matrix product of ``dtype`` (fastest of ``repeats``).

    The machine's rate is a peak, so the fastest product is its best estimate.
    """
    generator = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(size, size, device=device, generator=generator).to(dtype)
            for _ in range(2))
    times = time_steps(lambda: a @ b, repeats, 1, device)
    return 2 * size**3 / min(times) / 1e9


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` as ``FlopCounterMode`` counts them.

    Matmuls, convolutions and attention, forward and backward (the attention backward
    as torch counts it, with the recomputed scores; with activation checkpointing the
    recomputed forward too). torch counts its GPU attention kernels only; the CPU
    kernel is counted here with the same formulas.
    """
    aten = torch.ops.aten
    cpu_sdpa = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
                aten._scaled_dot_product_flash_attention_for_cpu_backward:
                _cpu_sdpa_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        step()
    return counter.get_total_flops()


def proc_status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in bytes."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(f'{field} is not in /proc/self/status')


def reset_peak_rss() -> int:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS, which is returned.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` cannot be used: it is never reset and a child
    started by ``subprocess`` (vfork + exec) inherits the parent's peak in it.

    Raises:
        OSError: Not Linux, or ``/proc/self/clear_refs`` is not writable.
    """
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError as error:
        raise OSError('Peak memory on the CPU needs Linux /proc/self/clear_refs '
                      f'({error})') from error
    return proc_status_bytes('VmRSS')


def trim_freed_memory() -> None:
    """Return the C heap's free memory to the system (glibc ``malloc_trim``).

    Raises:
        OSError: The C library is not glibc.
    """
    try:
        malloc_trim = ctypes.CDLL('libc.so.6').malloc_trim
    except (OSError, AttributeError) as error:
        raise OSError(f'Peak memory on the CPU needs glibc ({error})') from error
    malloc_trim(0)


def run_worker(args: argparse.Namespace) -> Dict:
    """One measurement of ``args.worker`` in this process (the child's side).

    Times the steps (and on a GPU their peak memory) or, with ``args.worker_memory``, the
    peak RSS of ``args.memory_steps`` steps after the warm-up (CPU only).
    """
    if args.worker == 'naive-attention':
        Attention.forward = naive_attention_forward
    cfg, _ = load_config(args)
    device = torch.device(args.device)
    workload = build_workload(cfg, args.worker, args.mode, args.batch_size, args.img_size,
                              device, args.amp, args.merge_lora)
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
                  flops_per_step=count_flops(workload.step) if args.worker_flops else None,
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
        variant: ``'ours'`` or a reference.
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


def summarise(runs: List[Dict], memory: Dict, batch_size: int, matmul_gflops: float) -> Dict:
    """Statistics of one variant over its timed rounds ``runs`` and the ``memory`` run."""
    times = [t for run in runs for t in run['step_times_s']]
    median = statistics.median(times)
    q1, q3 = np.percentile(times, [25, 75])
    flops = runs[0]['flops_per_step']
    achieved = flops / median / 1e9
    return dict(median_step_s=median, min_step_s=min(times), max_step_s=max(times),
                iqr_step_s=float(q3 - q1), images_per_s=batch_size / median,
                peak_memory_mib=memory['peak_memory_bytes'] / 2**20,
                baseline_memory_mib=memory['baseline_memory_bytes'] / 2**20,
                params_total=runs[0]['params_total'],
                params_trainable=runs[0]['params_trainable'],
                flops_per_step=flops, achieved_gflops=achieved,
                matmul_share=achieved / matmul_gflops, step_times_s=times)


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown'


def print_report(report: Dict) -> None:
    flags = [f for f in ('amp', 'with_cp', 'merge_lora') if report[f]]
    print(f"\n{report['config']}: {report['mode']}, batch {report['batch_size']}, "
          f"{report['img_size'][0]}x{report['img_size'][1]} px"
          f"{', ' + ', '.join(flags) if flags else ''}")
    print(f"device: {report['device_name']}, torch {report['torch']}, "
          f"{report['num_threads']} threads")
    print(f"matmul rate ({report['matmul_dtype']}, {report['matmul_size']}^2): "
          f"{report['matmul_gflops']:.1f} GFLOP/s")
    print(f"{report['iters']} timed steps after {report['warmup']} warm-up steps, "
          f"{report['rounds']} round(s); peak memory: {report['memory_measure']}")
    header = (f"{'variant':<16}{'median ms':>11}{'min-max ms':>18}{'IQR ms':>9}{'img/s':>9}"
              f"{'peak MiB':>10}{'params':>12}{'trainable':>11}{'GFLOP/step':>12}"
              f"{'GFLOP/s':>9}{'share':>7}")
    print(header + '\n' + '-' * len(header))
    for name in ('ours', report.get('reference_name')):
        if name is None:
            continue
        r = report['ours' if name == 'ours' else 'reference']
        spread = f"{r['min_step_s'] * 1e3:.1f}-{r['max_step_s'] * 1e3:.1f}"
        print(f"{name:<16}{r['median_step_s'] * 1e3:>11.1f}{spread:>18}"
              f"{r['iqr_step_s'] * 1e3:>9.1f}{r['images_per_s']:>9.2f}"
              f"{r['peak_memory_mib']:>10.1f}{r['params_total']:>12,}"
              f"{r['params_trainable']:>11,}{r['flops_per_step'] / 1e9:>12.2f}"
              f"{r['achieved_gflops']:>9.1f}{r['matmul_share']:>7.1%}")
    for key in ('time_ratio', 'time_ratio_paired', 'memory_ratio'):
        if key in report:
            value = report[key]
            print(f"{key} ({report['reference_name']} / ours): "
                  f"{'n/a' if value is None else f'{value:.3f}'}")
    for note in report['notes']:
        print(f'note: {note}')


def main(argv: Optional[Sequence[str]] = None) -> Optional[Dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        with open(args.worker_out, 'w') as f:
            json.dump(run_worker(args), f)
        return None

    cfg, notes = load_config(args)
    if args.reference:
        notes += check_reference(cfg, args)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.amp else torch.float32
    size = args.matmul_size or (8192 if device.type == 'cuda' else 2048)
    rate_before = matmul_rate(device, dtype, size)
    variants = ['ours'] + ([args.reference] if args.reference else [])
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
        num_threads=runs['ours'][0]['num_threads'],
        matmul_dtype=str(dtype).replace('torch.', ''), matmul_size=size, matmul_gflops=rate,
        memory_measure=('torch.cuda.max_memory_allocated during the steps (weights included)'
                        if device.type == 'cuda' else
                        f'growth of the peak RSS (VmHWM) during {args.memory_steps} step(s) '
                        'over the RSS between steps, blocks of 128 KiB or more unmapped when '
                        'freed'),
        notes=notes, ours=summarise(runs['ours'], memory['ours'], args.batch_size, rate))
    if args.reference:
        ours = report['ours']
        reference = report['reference'] = summarise(runs[args.reference], memory[args.reference],
                                                    args.batch_size, rate)
        report['reference_name'] = args.reference
        report['time_ratio'] = reference['median_step_s'] / ours['median_step_s']
        # Each round's two processes ran minutes apart at most: their ratio is
        # immune to the machine drifting between rounds.
        report['time_ratio_by_round'] = [
            statistics.median(theirs['step_times_s']) / statistics.median(mine['step_times_s'])
            for mine, theirs in zip(runs['ours'], runs[args.reference])]
        report['time_ratio_paired'] = statistics.median(report['time_ratio_by_round'])
        report['memory_ratio'] = (reference['peak_memory_mib'] / ours['peak_memory_mib']
                                  if ours['peak_memory_mib'] > 0 else None)
    print_report(report)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'wrote {args.json}')
    return report


if __name__ == '__main__':
    main()
