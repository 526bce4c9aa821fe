"""Which mmcv build this machine needs, and whether the installed one is it.

Called by ``tools/misc/setup_env.sh`` with the environment's Python:

    python tools/misc/mmcv_build_plan.py plan 2.1.0     # shell assignments, or FAILED: why
    python tools/misc/mmcv_build_plan.py verify 2.1.0   # exit 0 if the installed mmcv fits

mmcv's ``setup.py`` builds its CUDA ops whenever torch sees a GPU (or ``FORCE_CUDA=1``),
only for the visible GPU models unless ``TORCH_CUDA_ARCH_LIST`` is set, and torch's
extension builder refuses a CUDA toolkit of another major version than torch's. So the
plan is a CUDA build exactly when torch sees a GPU (``FORCE_CUDA`` overrides), for the
GPUs' compute capabilities unless ``TORCH_CUDA_ARCH_LIST`` names others, with a toolkit
of torch's CUDA major version; a case that cannot build the right mmcv stops, saying
what to install or set. The wheel cache key names the CUDA version and the
architectures (a CPU build keeps the key ``mmcv-<v>-torch<torch>-cuda0``).
"""
import argparse
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional, Tuple

DEFAULT_CUDA_HOME = '/usr/local/cuda'


class SetupError(Exception):
    """This machine cannot get the right mmcv as it is; the message says what to do."""


@dataclass(frozen=True)
class Facts:
    """What decides the mmcv build.

    Args:
        torch_version (str): ``torch.__version__``.
        torch_cuda (str, optional): ``torch.version.cuda`` (None for a CPU build).
        cuda_available (bool): ``torch.cuda.is_available()``.
        capabilities (tuple): ``(major, minor)`` of each GPU torch sees.
        gpus_listed (tuple): ``name, driver`` of each GPU ``nvidia-smi`` lists.
        cuda_home (str, optional): The CUDA toolkit found (with ``bin/nvcc``).
        nvcc_version (str, optional): Its ``release X.Y``.
        force_cuda (str, optional): ``FORCE_CUDA`` as set ('0', '1'), None if unset.
        arch_list (str, optional): ``TORCH_CUDA_ARCH_LIST``, None if unset.
    """
    torch_version: str
    torch_cuda: Optional[str]
    cuda_available: bool
    capabilities: Tuple[Tuple[int, int], ...] = ()
    gpus_listed: Tuple[str, ...] = ()
    cuda_home: Optional[str] = None
    nvcc_version: Optional[str] = None
    force_cuda: Optional[str] = None
    arch_list: Optional[str] = None


@dataclass(frozen=True)
class Plan:
    """The mmcv build: ``cuda``, for ``arch_list`` with the toolkit at ``cuda_home``,
    cached under the wheel folder ``key``."""
    cuda: bool
    key: str
    arch_list: str = ''
    cuda_home: str = ''

    def shell(self) -> str:
        """The plan as assignments for ``eval`` in bash."""
        values = dict(MMCV_KEY=self.key, MMCV_FORCE_CUDA=int(self.cuda),
                      MMCV_ARCH_LIST=self.arch_list, MMCV_CUDA_HOME=self.cuda_home)
        return '\n'.join(f'{name}={shlex.quote(str(value))}' for name, value in values.items())


def _major(version: str) -> str:
    return version.split('.')[0]


def _arch_key(arch_list: str) -> str:
    return '_'.join(sorted(arch for arch in re.split(r'[;\s]+', arch_list) if arch))


def decide(facts: Facts, mmcv_version: str) -> Plan:
    """The mmcv build for ``facts``.

    Raises:
        SetupError: No build on this machine gives an mmcv that works here (a GPU
            without a toolkit, a toolkit of another CUDA major version, a GPU the driver
            lists but torch does not see, ...); the message says what to install or set.
    """
    torch_name = f'torch {facts.torch_version}'
    cpu_key = f'mmcv-{mmcv_version}-torch{facts.torch_version}-cuda0'
    if facts.force_cuda == '0':
        return Plan(False, cpu_key)
    if facts.force_cuda != '1' and not facts.cuda_available:
        if facts.gpus_listed:
            raise SetupError(
                f"nvidia-smi lists {'; '.join(facts.gpus_listed)} but {torch_name} (CUDA "
                f'{facts.torch_cuda}) sees no GPU: its driver is likely too old for that '
                'CUDA (CUDA 13.0 needs driver >= 580). Update the driver, or install a '
                'torch built for its CUDA (TORCH_SPEC="torch==... torchvision==..."), or set '
                'FORCE_CUDA=0 for mmcv CPU ops only (Mask2Former then cannot run on the GPU)')
        return Plan(False, cpu_key)
    if facts.torch_cuda is None:
        raise SetupError(f'{torch_name} is a CPU build: mmcv cannot get CUDA ops against it; '
                         'install a CUDA build of torch (TORCH_SPEC=...) or unset FORCE_CUDA')
    cuda_major = _major(facts.torch_cuda)
    no_gpu_ops = 'or set FORCE_CUDA=0 for mmcv CPU ops only (Mask2Former then fails on the GPU)'
    if facts.cuda_home is None:
        raise SetupError(
            f'{torch_name} sees a GPU, but no CUDA toolkit was found (CUDA_HOME, nvcc on PATH, '
            f'{DEFAULT_CUDA_HOME}): install the CUDA {cuda_major}.x toolkit (nvcc) and set '
            f'CUDA_HOME to it, {no_gpu_ops}')
    if facts.nvcc_version is None:
        raise SetupError(f'{facts.cuda_home}/bin/nvcc --version names no "release X.Y"')
    if _major(facts.nvcc_version) != cuda_major:
        raise SetupError(
            f'{facts.cuda_home}/bin/nvcc is CUDA {facts.nvcc_version} but {torch_name} is '
            f'built for CUDA {facts.torch_cuda}, and torch builds extensions only with the '
            f'same major version: install the CUDA {cuda_major}.x toolkit and set CUDA_HOME '
            f'to it, or install a torch built for CUDA {_major(facts.nvcc_version)} '
            f'(TORCH_SPEC=...), {no_gpu_ops}')
    arch_list = facts.arch_list or ';'.join(
        sorted({f'{major}.{minor}' for major, minor in facts.capabilities}))
    if not arch_list.strip():
        raise SetupError('FORCE_CUDA=1 without a GPU torch sees: set TORCH_CUDA_ARCH_LIST to '
                         'the compute capabilities to build for, e.g. "8.0;9.0"')
    key = (f'mmcv-{mmcv_version}-torch{facts.torch_version}-cuda{facts.nvcc_version}'
           f'-sm{_arch_key(arch_list)}')
    return Plan(True, key, arch_list, facts.cuda_home)


def find_cuda_home(environ=os.environ) -> Optional[str]:
    """The CUDA toolkit torch's extension builder would use: ``CUDA_HOME`` (or
    ``CUDA_PATH``), else the one of ``nvcc`` on ``PATH``, else ``/usr/local/cuda``; None
    if that has no ``bin/nvcc``. A set ``CUDA_HOME`` is taken as it is."""
    home = environ.get('CUDA_HOME') or environ.get('CUDA_PATH')
    if home:
        return home if osp.isfile(osp.join(home, 'bin', 'nvcc')) else None
    nvcc = shutil.which('nvcc', path=environ.get('PATH'))
    candidates = [osp.dirname(osp.dirname(osp.realpath(nvcc)))] if nvcc else []
    for home in candidates + [DEFAULT_CUDA_HOME]:
        if osp.isfile(osp.join(home, 'bin', 'nvcc')) and osp.isdir(osp.join(home, 'include')):
            return home
    return None


def nvcc_version(cuda_home: str) -> Optional[str]:
    out = subprocess.run([osp.join(cuda_home, 'bin', 'nvcc'), '--version'],
                         capture_output=True, text=True).stdout
    found = re.search(r'release (\d+\.\d+)', out)
    return found.group(1) if found else None


def listed_gpus(environ=os.environ) -> Tuple[str, ...]:
    """``name, driver`` of each GPU ``nvidia-smi`` lists (none without it)."""
    smi = shutil.which('nvidia-smi', path=environ.get('PATH'))
    if smi is None:
        return ()
    out = subprocess.run([smi, '--query-gpu=name,driver_version', '--format=csv,noheader'],
                         capture_output=True, text=True)
    return tuple(line.strip() for line in out.stdout.splitlines() if line.strip())


def gather_facts(environ=os.environ) -> Facts:
    """The facts of this machine, from torch, ``nvidia-smi``, ``nvcc`` and the environment."""
    import torch
    available = torch.cuda.is_available()
    capabilities = tuple(torch.cuda.get_device_capability(index)
                         for index in range(torch.cuda.device_count())) if available else ()
    cuda_home = find_cuda_home(environ)
    return Facts(torch_version=torch.__version__, torch_cuda=torch.version.cuda,
                 cuda_available=available, capabilities=capabilities,
                 gpus_listed=listed_gpus(environ), cuda_home=cuda_home,
                 nvcc_version=nvcc_version(cuda_home) if cuda_home else None,
                 force_cuda=environ.get('FORCE_CUDA'),
                 arch_list=environ.get('TORCH_CUDA_ARCH_LIST') or None)


def installed_mismatch(plan: Plan, mmcv_version: str) -> Optional[str]:
    """What is wrong with the installed mmcv for ``plan``; None if it fits.

    A CUDA build fits a CPU plan. For a CUDA plan ``mmcv.ops`` must be compiled with
    CUDA of torch's major version and, where torch sees a GPU, run mmcv's multi-scale
    deformable attention (Mask2Former's op) on it, equal to mmcv's PyTorch version.
    """
    try:
        import mmcv
        if mmcv.__version__ != mmcv_version:
            return f'mmcv {mmcv.__version__} is installed, not {mmcv_version}'
        import mmcv.ops
    except Exception as error:
        return f'mmcv.ops does not import ({type(error).__name__}: {error})'
    if not plan.cuda:
        return None
    import torch
    compiled = mmcv.ops.get_compiling_cuda_version()
    if compiled == 'not available':
        return 'mmcv.ops has CPU ops only (built where torch saw no GPU)'
    if _major(compiled) != _major(torch.version.cuda or ''):
        return f'mmcv.ops was built with CUDA {compiled}, torch uses CUDA {torch.version.cuda}'
    if not torch.cuda.is_available():
        return None
    from mmcv.ops.multi_scale_deform_attn import (
        MultiScaleDeformableAttnFunction,
        multi_scale_deformable_attn_pytorch,
    )
    generator = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[4, 4]], device='cuda')
    value = torch.rand(1, 16, 2, 8, generator=generator).cuda()
    locations = torch.rand(1, 3, 2, 1, 2, 2, generator=generator).cuda()
    weights = torch.rand(1, 3, 2, 1, 2, generator=generator).cuda()
    try:
        out = MultiScaleDeformableAttnFunction.apply(
            value, shapes, torch.tensor([0], device='cuda'), locations, weights, 64)
        torch.cuda.synchronize()
    except Exception as error:
        return (f'mmcv.ops fails on {torch.cuda.get_device_name()} ({type(error).__name__}: '
                f'{error}); built for other GPUs? (TORCH_CUDA_ARCH_LIST)')
    reference = multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)
    if not torch.allclose(out, reference, atol=1e-5):
        return 'mmcv.ops multi-scale deformable attention differs from its PyTorch version'
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('command', choices=['plan', 'verify'])
    parser.add_argument('mmcv_version')
    args = parser.parse_args(argv)
    try:
        plan = decide(gather_facts(), args.mmcv_version)
    except SetupError as error:
        print(f'[setup] FAILED: {error}', file=sys.stderr)
        return 1
    if args.command == 'plan':
        print(plan.shell())
        return 0
    problem = installed_mismatch(plan, args.mmcv_version)
    if problem:
        print(f'[setup] mmcv does not fit ({plan.key}): {problem}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
