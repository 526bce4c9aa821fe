"""tools/misc/setup_env.sh and the mmcv build plan it follows, on stubbed machines: a fake
``torch`` (what it sees), fake ``nvcc`` and ``nvidia-smi`` on PATH. No mmcv is built."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, load_tool

plan_tool = load_tool('misc/mmcv_build_plan')
Facts, Plan, SetupError = plan_tool.Facts, plan_tool.Plan, plan_tool.SetupError
TORCH = '2.14.1+cu130'
CPU_KEY = f'mmcv-2.1.0-torch{TORCH}-cuda0'  # the key CI's cached wheel lives under

FAKE_TORCH = '''import json, os
_facts = json.loads(os.environ['FAKE_TORCH'])
__version__ = _facts['version']
class version:
    cuda = _facts['cuda']
class cuda:
    is_available = staticmethod(lambda: bool(_facts['capabilities']))
    device_count = staticmethod(lambda: len(_facts['capabilities']))
    get_device_capability = staticmethod(lambda index: tuple(_facts['capabilities'][index]))
'''


def facts(**changes):
    settings = dict(torch_version=TORCH, torch_cuda='13.0', cuda_available=True,
                    capabilities=((9, 0),), gpus_listed=('NVIDIA H200, 580.65',),
                    cuda_home='/opt/cuda-13.0', nvcc_version='13.0')
    settings.update(changes)
    return Facts(**settings)


def no_gpu(**changes):
    return facts(cuda_available=False, capabilities=(), gpus_listed=(), **changes)


def test_a_machine_without_gpu_builds_cpu_ops_under_the_cached_key():
    assert plan_tool.decide(no_gpu(), '2.1.0') == Plan(False, CPU_KEY)
    assert plan_tool.decide(no_gpu(cuda_home=None, nvcc_version=None), '2.1.0').key == CPU_KEY


def test_a_gpu_builds_cuda_ops_for_its_architecture_with_the_toolkit():
    plan = plan_tool.decide(facts(capabilities=((9, 0), (9, 0), (8, 0))), '2.1.0')
    assert plan == Plan(True, f'mmcv-2.1.0-torch{TORCH}-cuda13.0-sm8.0_9.0', '8.0;9.0',
                        '/opt/cuda-13.0')


def test_torch_cuda_arch_list_is_built_for_and_named_in_the_key():
    plan = plan_tool.decide(facts(arch_list='9.0;8.6 10.0+PTX'), '2.1.0')
    assert plan.arch_list == '9.0;8.6 10.0+PTX'
    assert plan.key == f'mmcv-2.1.0-torch{TORCH}-cuda13.0-sm10.0+PTX_8.6_9.0'


@pytest.mark.parametrize('changes, says', [
    (dict(cuda_home=None, nvcc_version=None),
     'no CUDA toolkit was found .* install the CUDA 13.x toolkit .* CUDA_HOME .* FORCE_CUDA=0'),
    (dict(nvcc_version='12.4'),
     'nvcc is CUDA 12.4 but torch 2.14.1.cu130 is built for CUDA 13.0.* install the CUDA '
     '13.x toolkit and set CUDA_HOME'),
    (dict(cuda_available=False, capabilities=()),
     'nvidia-smi lists NVIDIA H200, 580.65 but torch .* sees no GPU: .*driver'),
    (dict(cuda_available=False, capabilities=(), gpus_listed=(), force_cuda='1'),
     'FORCE_CUDA=1 without a GPU torch sees: set TORCH_CUDA_ARCH_LIST'),
    (dict(torch_cuda=None, force_cuda='1', arch_list='9.0'), 'is a CPU build'),
])
def test_a_machine_that_cannot_build_the_right_mmcv_is_told_what_to_do(changes, says):
    with pytest.raises(SetupError, match=says):
        plan_tool.decide(facts(**changes), '2.1.0')


def test_force_cuda_overrides_what_torch_sees():
    assert plan_tool.decide(facts(force_cuda='0', cuda_home=None), '2.1.0') == Plan(
        False, CPU_KEY)
    plan = plan_tool.decide(no_gpu(force_cuda='1', arch_list='9.0'), '2.1.0')
    assert plan.cuda and plan.key.endswith('-cuda13.0-sm9.0')


def test_the_installed_cpu_build_does_not_fit_a_gpu_machine():
    """This environment's mmcv has CPU ops only: fine for a CPU plan, not for a CUDA one."""
    assert plan_tool.installed_mismatch(Plan(False, CPU_KEY), '2.1.0') is None
    assert plan_tool.installed_mismatch(Plan(True, 'k', '9.0', '/cuda'), '2.1.0') == (
        'mmcv.ops has CPU ops only (built where torch saw no GPU)')
    assert 'not 2.2.0' in plan_tool.installed_mismatch(Plan(False, CPU_KEY), '2.2.0')


@pytest.fixture
def machine(tmp_path):
    """Run the planner or setup_env.sh with a fake torch, nvcc and nvidia-smi."""
    (tmp_path / 'fake' / 'torch').mkdir(parents=True)
    (tmp_path / 'fake' / 'torch' / '__init__.py').write_text(FAKE_TORCH)
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()

    def fake(path, output):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'#!/bin/sh\necho "{output}"\n')
        path.chmod(0o755)

    def run(*command, capabilities=(), nvcc=None, smi=None, **env):
        if nvcc:  # a toolkit: <tmp>/cuda-X/bin/nvcc and include/, its bin on PATH
            home = tmp_path / f'cuda-{nvcc}'
            fake(home / 'bin' / 'nvcc', f'Cuda compilation tools, release {nvcc}, V{nvcc}.1')
            (home / 'include').mkdir(exist_ok=True)
        if smi:
            fake(bin_dir / 'nvidia-smi', smi)
        else:
            (bin_dir / 'nvidia-smi').unlink(missing_ok=True)
        environ = {k: v for k, v in os.environ.items()
                   if k not in ('CUDA_HOME', 'CUDA_PATH', 'FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST')}
        path = ([str(tmp_path / f'cuda-{nvcc}' / 'bin')] if nvcc else []) + [str(bin_dir)]
        environ.update(env, PYTHONPATH=str(tmp_path / 'fake'),
                       PATH=os.pathsep.join(path + ['/usr/bin', '/bin']),
                       FAKE_TORCH=json.dumps(dict(version=TORCH, cuda='13.0',
                                                  capabilities=list(capabilities))))
        result = subprocess.run(command, cwd=ROOT, env=environ, capture_output=True,
                                text=True, timeout=120)
        return result.returncode, result.stdout + result.stderr

    run.tmp_path = tmp_path
    return run


def planned(machine, **settings):
    return machine(sys.executable, 'tools/misc/mmcv_build_plan.py', 'plan', '2.1.0', **settings)


def test_the_planner_reads_torch_nvcc_and_nvidia_smi(machine):
    rc, out = planned(machine, capabilities=[[9, 0]], nvcc='13.0', smi='NVIDIA H200, 580.65')
    assert rc == 0, out
    assert f"MMCV_KEY=mmcv-2.1.0-torch{TORCH}-cuda13.0-sm9.0" in out
    assert f"MMCV_CUDA_HOME={machine.tmp_path / 'cuda-13.0'}" in out
    rc, out = planned(machine, capabilities=[[9, 0]], nvcc='13.0', TORCH_CUDA_ARCH_LIST='8.0')
    assert "MMCV_ARCH_LIST=8.0\n" in out and 'sm8.0' in out
    rc, out = planned(machine, capabilities=[[9, 0]], nvcc='12.4')
    assert rc == 1 and 'nvcc is CUDA 12.4 but torch' in out
    rc, out = planned(machine, smi='NVIDIA H200, 535.54')
    assert rc == 1 and 'lists NVIDIA H200, 535.54 but torch' in out
    rc, out = planned(machine)
    assert rc == 0 and f'MMCV_KEY={CPU_KEY}\nMMCV_FORCE_CUDA=0\n' in out


def test_a_venv_stamped_without_gpu_is_not_up_to_date_on_a_gpu_node(machine):
    venv = machine.tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    (venv / 'bin' / 'python').write_text('#!/bin/sh\nexit 1\n')  # any use of it fails
    (venv / 'bin' / 'python').chmod(0o755)
    script = ('bash', 'tools/misc/setup_env.sh')
    rc, stamp = machine(*script, '--print-stamp', DINOLORA_VENV=str(venv))
    assert rc == 0 and 'gpus: \n' in stamp
    (venv / '.dinolora-stamp').write_text(stamp)
    rc, out = machine(*script, DINOLORA_VENV=str(venv))
    assert rc == 0 and f'environment up to date: {venv}' in out
    rc, out = machine(*script, DINOLORA_VENV=str(venv), smi='NVIDIA H200')
    assert 'up to date' not in out and '[setup] build tools' in out  # it goes on to check
    rc, out = machine(*script, DINOLORA_VENV=str(venv), TORCH_CUDA_ARCH_LIST='9.0')
    assert 'up to date' not in out
