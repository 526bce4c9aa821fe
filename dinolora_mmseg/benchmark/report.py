"""The benchmark's report: statistics of each variant, ratios between them, the table."""
import statistics
from typing import Dict, List, Sequence

import numpy as np


def summarise(runs: List[Dict], memory: Dict, batch_size: int, matmul_gflops: float) -> Dict:
    """Statistics of one variant over its timed rounds ``runs`` and the ``memory`` run
    (FLOPs of the eager PyTorch step for every backend: the same work)."""
    times = [t for run in runs for t in run['step_times_s']]
    median = statistics.median(times)
    q1, q3 = np.percentile(times, [25, 75])
    flops = runs[0]['flops_per_step']
    achieved = flops / median / 1e9
    summary = dict(median_step_s=median, min_step_s=min(times), max_step_s=max(times),
                   iqr_step_s=float(q3 - q1), images_per_s=batch_size / median,
                   peak_memory_mib=memory['peak_memory_bytes'] / 2**20,
                   baseline_memory_mib=memory['baseline_memory_bytes'] / 2**20,
                   params_total=runs[0]['params_total'],
                   params_trainable=runs[0]['params_trainable'],
                   flops_per_step=flops, achieved_gflops=achieved,
                   matmul_share=achieved / matmul_gflops, step_times_s=times)
    if runs[0].get('setup_s') is not None:
        summary['setup_s'] = statistics.median(run['setup_s'] for run in runs)
    return summary


def time_ratios(runs: Dict[str, List[Dict]], numerators: Sequence[str]) -> Dict[str, Dict]:
    """``'A/B'`` -> time of ``A`` over time of ``B`` for each ``A`` of ``numerators`` and
    every other variant ``B`` of ``runs`` (variant -> its rounds, each with
    ``step_times_s``, in one order): ``pooled`` (of the medians over all rounds),
    ``by_round`` (each round's own ratio, free of the machine's drift) and ``paired``
    (their median)."""
    def median(rounds):
        return statistics.median(t for run in rounds for t in run['step_times_s'])

    ratios = {}
    for a in numerators:
        for b in runs:
            if b == a:
                continue
            by_round = [statistics.median(x['step_times_s']) / statistics.median(y['step_times_s'])
                        for x, y in zip(runs[a], runs[b])]
            ratios[f'{a}/{b}'] = dict(pooled=median(runs[a]) / median(runs[b]),
                                      paired=statistics.median(by_round), by_round=by_round)
    return ratios


def print_report(report: Dict) -> None:
    """Print the report as a table, one row per variant, and its ratios."""
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
    header = (f"{'variant':<22}{'median ms':>11}{'min-max ms':>18}{'IQR ms':>9}{'img/s':>9}"
              f"{'peak MiB':>10}{'params':>12}{'trainable':>11}{'GFLOP/step':>12}"
              f"{'GFLOP/s':>9}{'share':>7}{'setup s':>9}")
    print(header + '\n' + '-' * len(header))
    rows = [(f'ours ({name})', r) for name, r in report['backends'].items()]
    if report.get('reference_name'):
        rows.append((report['reference_name'], report['reference']))
    for name, r in rows:
        spread = f"{r['min_step_s'] * 1e3:.1f}-{r['max_step_s'] * 1e3:.1f}"
        setup = f"{r['setup_s']:.1f}" if 'setup_s' in r else '-'
        print(f"{name:<22}{r['median_step_s'] * 1e3:>11.1f}{spread:>18}"
              f"{r['iqr_step_s'] * 1e3:>9.1f}{r['images_per_s']:>9.2f}"
              f"{r['peak_memory_mib']:>10.1f}{r['params_total']:>12,}"
              f"{r['params_trainable']:>11,}{r['flops_per_step'] / 1e9:>12.2f}"
              f"{r['achieved_gflops']:>9.1f}{r['matmul_share']:>7.1%}{setup:>9}")
    for key, value in report['time_ratios'].items():
        print(f"time ratio {key}: pooled {value['pooled']:.3f}, paired {value['paired']:.3f}")
    if report.get('memory_ratio') is not None:
        print(f"memory ratio ({report['reference_name']} / ours): {report['memory_ratio']:.3f}")
    for note in report['notes']:
        print(f'note: {note}')
