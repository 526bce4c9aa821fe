"""Which device a run uses, and a refusal where GPUs are present but CUDA is unusable.

With a driver too old for torch's CUDA build, ``torch.cuda.is_available()`` is False
without a word, and a launch on a GPU node would train on its CPUs: gloo, BN instead of
SyncBN, CPU bfloat16. :func:`select_device` refuses that unless the user asks for the
CPU (``--device cpu``, or ``DINOLORA_ALLOW_CPU=1``).
"""
import glob
import os
import shutil
import subprocess
import warnings
from typing import List, Optional

import torch

ALLOW_CPU_ENV = 'DINOLORA_ALLOW_CPU'


def run_nvidia_smi(*args: str) -> List[str]:
    """The output lines of ``nvidia-smi ARGS``; none where it is missing or fails."""
    program = shutil.which('nvidia-smi')
    if program is None:
        return []
    try:
        result = subprocess.run([program, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] \
        if result.returncode == 0 else []


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
    """``'cuda'`` or ``'cpu'`` for this run.

    Args:
        device (str, optional): ``'cuda'``, ``'cpu'`` (``--device``; the GPUs are hidden
            with ``CUDA_VISIBLE_DEVICES=``), or None: CUDA where torch can use it, else
            the CPU, unless GPUs are present.

    Raises:
        RuntimeError: CUDA is unusable although GPUs are present (or ``device`` is
            ``'cuda'``) and neither ``--device cpu`` nor ``DINOLORA_ALLOW_CPU=1`` asks for
            the CPU; or ``device`` is ``'cpu'`` but CUDA was started before the GPUs
            could be hidden. The message gives the reason (torch's CUDA and the driver).
    """
    if device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''  # read where CUDA starts
        if torch.cuda.is_available():
            raise RuntimeError('--device cpu: CUDA was started before the GPUs could be '
                               'hidden; run with CUDA_VISIBLE_DEVICES= instead')
        return 'cpu'
    available = torch.cuda.is_available()
    if available:
        return 'cuda'
    evidence = gpu_evidence() if device is None else ['--device cuda']
    if not evidence or os.environ.get(ALLOW_CPU_ENV) == '1':
        return 'cpu'
    raise RuntimeError(
        f'GPUs are present ({"; ".join(evidence)}) but torch cannot use CUDA: '
        f'{cuda_failure()}. Install a torch build for this driver, or a driver for this '
        f'torch (CUDA 12.x needs driver >= 525, CUDA 13.x >= 580); to run on the CPU '
        f'anyway, pass '
        f'--device cpu or set {ALLOW_CPU_ENV}=1')
