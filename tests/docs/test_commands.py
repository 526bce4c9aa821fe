"""The commands of README.md and docs/*.md.

Those that run on the demo data (they name ``data/demo``, the demo work dir or the demo
config) run as written, in a folder of their own that links ``configs/`` and ``tools/``;
the others (real datasets, official weights, and the benchmark's measurements, minutes
each) are checked against their tools: the scripts and configs they name exist and the
tools' parsers accept their options. Config examples
(``python`` blocks that start with ``_base_``) load and build their model.
"""
import glob
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
from typing import Dict, List, NamedTuple

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from tests.helpers import ROOT, free_port, load_tool

DOCS = [osp.join(ROOT, 'README.md')] + sorted(glob.glob(osp.join(ROOT, 'docs', '*.md')))
DEMO_PATHS = ('data/demo', 'work_dirs/dinov2_lora_voc_demo', 'configs/demo/')


class Command(NamedTuple):
    doc: str
    text: str
    env: Dict[str, str]
    argv: List[str]


def fenced_blocks(path: str, language: str) -> List[str]:
    with open(path) as f:
        return re.findall(rf'^```{language}\n(.*?)^```', f.read(), flags=re.S | re.M)


def commands(path: str) -> List[Command]:
    found = []
    for block in fenced_blocks(path, 'bash'):
        for line in block.replace('\\\n', ' ').splitlines():
            words = shlex.split(line, comments=True)
            env = {}
            while words and re.fullmatch(r'[A-Z_]+=\S*', words[0]):
                name, value = words.pop(0).split('=', 1)
                env[name] = value
            if words:
                found.append(Command(osp.relpath(path, ROOT), line.strip(), env, words))
    return found


ALL = [command for doc in DOCS for command in commands(doc)]
DEMO = list({c.text: c for c in ALL if any(p in c.text for p in DEMO_PATHS)
             and 'benchmark.py' not in c.text}.values())
OTHERS = [c for c in ALL if c not in DEMO and c.text not in {d.text for d in DEMO}]


def check_tool_options(script: str, args: List[str], monkeypatch) -> None:
    """The tool at ``script`` exists, the configs in ``args`` exist, its parser takes them."""
    assert osp.isfile(osp.join(ROOT, script)), f'{script} does not exist'
    for arg in args:
        if re.fullmatch(r'configs/\S+\.py', arg):
            assert osp.isfile(osp.join(ROOT, arg)), f'{arg} does not exist'
    if script.endswith('.sh'):
        name = osp.basename(script)
        if name == 'torchrun.sh':
            return check_tool_options(args[0], args[2:], monkeypatch)
        positional = {'dist_train.sh': 2, 'dist_test.sh': 3}[name]
        target = 'tools/train.py' if name == 'dist_train.sh' else 'tools/test.py'
        inputs = args[:positional - 1] + args[positional:] + ['--launcher', 'pytorch']
        return check_tool_options(target, inputs, monkeypatch)
    tool = load_tool(script[len('tools/'):-len('.py')])
    monkeypatch.setattr(sys, 'argv', [script, *args])
    tool.parse_args()


def test_the_docs_have_commands_of_both_kinds():
    assert len(DEMO) >= 8 and len(OTHERS) >= 20
    assert any('tools/train.py' in c.text for c in DEMO)


@pytest.mark.parametrize('command', OTHERS, ids=lambda c: f'{c.doc}: {c.text[:70]}')
def test_command_fits_its_tool(command, monkeypatch):
    program, *args = command.argv
    if program == 'make':
        with open(osp.join(ROOT, 'Makefile')) as f:
            targets = re.findall(r'^([\w-]+):', f.read(), flags=re.M)
        assert set(args) <= set(targets), (args, targets)
    elif program == 'source':
        assert args == ['~/.cache/dinolora-mmseg/venv/bin/activate']
    else:
        assert program in ('python', 'bash'), command.text
        check_tool_options(args[0], args[1:], monkeypatch)


def run_order(command: Command) -> int:
    """Demo data first, training next, then the rest in the order of the docs."""
    if 'make_demo_data.py' in command.text:
        return 0
    return 1 if 'tools/train.py' in command.text else 2


def test_demo_commands_run_as_written(tmp_path):
    for name in ('configs', 'tools'):
        os.symlink(osp.join(ROOT, name), tmp_path / name)
    for command in sorted(DEMO, key=run_order):
        argv = [sys.executable if word == 'python' else word for word in command.argv]
        env = dict(os.environ, **command.env, PYTHON=sys.executable, PORT=str(free_port()))
        result = subprocess.run(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=3600)
        assert result.returncode == 0, (
            f'{command.doc}: {command.text}\n{result.stdout[-4000:]}')


CONFIG_EXAMPLES = [(osp.relpath(doc, ROOT), block) for doc in DOCS
                   for block in fenced_blocks(doc, 'python') if block.startswith('_base_')]


@pytest.mark.parametrize('doc, block', CONFIG_EXAMPLES, ids=lambda x: str(x)[:40])
def test_config_examples_build_their_model(doc, block, tmp_path):
    """``_base_ = './x.py'`` is relative to configs/, where the examples belong."""
    config = tmp_path / 'example.py'
    config.write_text(block.replace("_base_ = './", f"_base_ = '{ROOT}/configs/"))
    cfg = Config.fromfile(str(config))
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.backbone.pretrained = None
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert model.decode_head.num_classes == cfg.model.decode_head.num_classes
