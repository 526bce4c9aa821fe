"""The tables and the plot of ``tools/analysis_tools/test_robustness.py``: mIoU per
corruption and severity, their means, and the relative robustness."""
import os.path as osp

import numpy as np
from matplotlib.figure import Figure

from ..datasets import CORRUPTION_FAMILIES

FAMILY = {name: family for family, names in CORRUPTION_FAMILIES.items() for name in names}


def run_name(corruption: str, severity: int) -> str:
    """The name of a run: ``'clean'`` or ``'<corruption>_<severity>'``."""
    return 'clean' if corruption == 'clean' else f'{corruption}_{severity}'


def summarize(results: dict, corruptions, severities) -> dict:
    """Means of the mIoU table and the relative robustness (mean corrupted / clean)."""
    table = np.array([[results[run_name(c, s)]['mIoU'] for s in severities]
                      for c in corruptions])
    clean = results['clean']['mIoU']
    mean = float(table.mean())
    return dict(corruptions=list(corruptions), severities=list(severities), clean_mIoU=clean,
                mean_per_severity={str(s): round(float(v), 2)
                                   for s, v in zip(severities, table.mean(axis=0))},
                mean_per_corruption={c: round(float(v), 2)
                                     for c, v in zip(corruptions, table.mean(axis=1))},
                mean_mIoU=round(mean, 2),
                relative_robustness=round(mean / clean, 4) if clean else None)


def relative(summary: dict) -> str:
    """The relative robustness as text."""
    rel = summary['relative_robustness']
    return 'n/a (clean mIoU 0)' if rel is None else f'{rel:.4f}'


def markdown(key: dict, results: dict, summary: dict) -> str:
    """The mIoU table of a sweep in Markdown, with its means and the relative robustness."""
    severities, corruptions = summary['severities'], summary['corruptions']
    lines = [f"# Robustness of {osp.basename(key['checkpoint'])} "
             f"({osp.basename(key['config'])})", '',
             f"mIoU (%) on the test set with ImageNet-C corruptions (`ImageCorruption`, seed "
             f"{key['seed']}) at severities {', '.join(map(str, severities))}.", '',
             '| corruption | family | ' + ' | '.join(map(str, severities)) + ' | mean |',
             '|---|---|' + '---:|' * (len(severities) + 1)]
    for c in corruptions:
        values = [results[run_name(c, s)]['mIoU'] for s in severities]
        values.append(summary['mean_per_corruption'][c])
        lines.append(f'| {c} | {FAMILY[c]} | ' + ' | '.join(f'{v:.2f}' for v in values) + ' |')
    means = [summary['mean_per_severity'][str(s)] for s in severities]
    lines += ['| **mean** | | ' + ' | '.join(f'{v:.2f}' for v in means)
              + f" | **{summary['mean_mIoU']:.2f}** |", '',
              f"Clean mIoU: {summary['clean_mIoU']:.2f}. Mean corrupted mIoU: "
              f"{summary['mean_mIoU']:.2f}. Relative robustness (mean corrupted / clean): "
              f'{relative(summary)}.', '']
    return '\n'.join(lines)


def plot(key: dict, results: dict, summary: dict, f) -> None:
    """Write the PNG of mIoU against severity per family, the mean and the clean mIoU."""
    severities, clean = summary['severities'], summary['clean_mIoU']
    fig = Figure(figsize=(7.2, 4))
    ax = fig.add_subplot()
    for family, names in CORRUPTION_FAMILIES.items():
        names = [n for n in summary['corruptions'] if n in names]
        if names:
            means = [np.mean([results[run_name(n, s)]['mIoU'] for n in names])
                     for s in severities]
            ax.plot(severities, means, marker='o', label=f'{family} ({len(names)})')
    ax.plot(severities, [summary['mean_per_severity'][str(s)] for s in severities],
            color='black', linewidth=2.5, marker='s',
            label=f"mean ({len(summary['corruptions'])})")
    ax.axhline(clean, color='grey', linestyle='--', label=f'clean ({clean:.2f})')
    top = max([clean] + [results[run_name(c, s)]['mIoU'] for c in summary['corruptions']
                         for s in severities])
    ax.set(xlabel='severity', ylabel='mIoU (%)', xticks=severities, ylim=(0, 1.08 * top + 1),
           title=f"{osp.basename(key['config'])}: relative robustness {relative(summary)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small', loc='center left', bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(f, format='png', dpi=100)
