"""Which device a run uses, and a refusal where GPUs are present but CUDA is unusable (a
driver too old for torch's CUDA build), where a run would train on the CPUs unawares."""
import glob
import os
import subprocess
import warnings
from typing import List, Optional

import torch

ALLOW_CPU_ENV = 'DINOLORA_ALLOW_CPU'


def run_nvidia_smi(*args: str) -> List[str]:
    """The output lines of ``nvidia-smi ARGS``; none where it is missing or fails."""
    try:
        result = subprocess.run(['nvidia-smi', *args], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # not installed, or hanging
        return []
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines if result.returncode == 0 else []


def gpu_evidence() -> List[str]:
    """What says this machine has NVIDIA GPUs: ``nvidia-smi -L``, ``/dev/nvidia<N>``,
    ``CUDA_VISIBLE_DEVICES`` naming devices. Empty on a machine without any."""
    found = []
    listed = [line for line in run_nvidia_smi('-L') if line.startswith('GPU ')]
    if listed:
        found.append(f'nvidia-smi lists {len(listed)} GPU(s): {listed[0]}'
                     + (', ...' if len(listed) > 1 else ''))
    nodes = sorted(glob.glob('/dev/nvidia[0-9]*'))
    if nodes:
        found.append(f'{", ".join(nodes)} exist')
    visible = os.environ.get('CUDA_VISIBLE_DEVICES', '').strip()
    if visible and not visible.startswith('-1'):
        found.append(f'CUDA_VISIBLE_DEVICES={visible}')
    return found


def cuda_failure() -> str:
    """Why torch cannot use CUDA: its build's CUDA version, the driver's version, and
    torch's own message when CUDA is started."""
    driver = run_nvidia_smi('--query-gpu=driver_version', '--format=csv,noheader')
    parts = [f'torch {torch.__version__} is built for CUDA {torch.version.cuda}'
             if torch.version.cuda else f'torch {torch.__version__} is built without CUDA',
             f'the NVIDIA driver is {driver[0]}' if driver else
             'nvidia-smi reports no driver version']
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            torch.cuda.init()
        except (RuntimeError, AssertionError) as error:
            parts.append(f'torch says: {str(error).strip()}')
    parts += [f'torch warns: {str(w.message).strip()}' for w in caught]
    return '; '.join(parts)


def select_device(device: Optional[str] = None) -> str:
    """``'cuda'`` or ``'cpu'`` for this run; ``RuntimeError`` (naming torch's CUDA and the
    driver) where GPUs are present but CUDA is unusable, unless ``DINOLORA_ALLOW_CPU=1``.

    Args:
        device (str, optional): ``--device``: ``'cuda'``, ``'cpu'`` (the GPUs are hidden),
            or None: CUDA where torch can use it, else the CPU unless GPUs are present.
    """
    if device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''  # read where CUDA starts
        if torch.cuda.is_available():
            raise RuntimeError('--device cpu: CUDA was started before the GPUs could be '
                               'hidden; run with CUDA_VISIBLE_DEVICES= instead')
        return 'cpu'
    if torch.cuda.is_available():
        return 'cuda'
    evidence = gpu_evidence() if device is None else ['--device cuda']
    if not evidence or os.environ.get(ALLOW_CPU_ENV) == '1':
        return 'cpu'
    raise RuntimeError(
        f'GPUs are present ({"; ".join(evidence)}) but torch cannot use CUDA: '
        f'{cuda_failure()}. Install a torch build for this driver, or a driver for this '
        f'torch (CUDA 12.x needs driver >= 525, CUDA 13.x >= 580); to run on the CPU '
        f'anyway, pass --device cpu or set {ALLOW_CPU_ENV}=1')
