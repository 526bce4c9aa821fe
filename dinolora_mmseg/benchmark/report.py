"""The report of ``tools/analysis_tools/benchmark.py``: statistics of each variant's
measurements, and the table it prints."""
import statistics
from typing import Dict, List

import numpy as np


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
