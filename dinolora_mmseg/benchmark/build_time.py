"""The cost of building a backbone from its pretrained file, next to reading that file."""
import os
import statistics
import time
from typing import Dict, List

import torch
from mmseg.registry import MODELS

from ..utils.weights import hub_cache_path, is_url
from .report import time_ratios

BUILD_VARIANTS = ('build', 'torch-load')


def time_build_variant(backbone_cfg: Dict, variant: str) -> float:
    """Seconds to build ``backbone_cfg`` from its ``pretrained`` file (a path, or a URL
    in the torch hub cache) for ``variant`` ``'build'``, or to ``torch.load`` that file
    (``'torch-load'``)."""
    path = backbone_cfg['pretrained']
    path = hub_cache_path(path) if is_url(path) else path
    if not os.path.isfile(path):
        raise FileNotFoundError(f'--mode build needs the pretrained file here: {path}')
    start = time.perf_counter()
    if variant == 'build':
        MODELS.build(backbone_cfg)
    else:
        torch.load(path, map_location='cpu', weights_only=True)
    return time.perf_counter() - start


def summarise_build_times(times: Dict[str, List[float]]) -> Dict:
    """Median, min and max seconds of each variant (``times``: variant -> seconds of each
    round), and build over ``torch.load`` (:func:`~.report.time_ratios`)."""
    rounds = {name: [dict(step_times_s=[t]) for t in values] for name, values in times.items()}
    return dict(
        variants={name: dict(median_s=statistics.median(values), min_s=min(values),
                             max_s=max(values), rounds_s=values)
                  for name, values in times.items()},
        build_over_torch_load=time_ratios(rounds, ['build'])['build/torch-load'])
