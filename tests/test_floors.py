"""The package's floors (docs/DESIGN): utils -> datasets, models -> deployment -> engine
-> benchmark -> tools. A module never imports from a higher floor; same floor or lower is
fine. ``visualization`` imports only datasets and is used only by tools: it sits on the
models floor, so that models, deployment, engine and benchmark may use it and it may not
use them."""
import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

from tests.helpers import ROOT

PACKAGE = 'dinolora_mmseg'
FLOORS = {'utils': 0, 'datasets': 1, 'models': 2, 'visualization': 2, 'deployment': 3,
          'engine': 4, 'benchmark': 5, 'tools': 6}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) of every import in the file, also inside functions."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1])
                module = f'{base}.{node.module}' if node.module else base
            else:
                module = node.module
            if node.module is None:  # `from . import x`: x is a module of the package
                for alias in node.names:
                    yield node.lineno, f'{module}.{alias.name}'
            else:
                yield node.lineno, module


def floor(module: str):
    """The floor of a module of the package or of ``tools``; None for anything else and
    for the package's own ``__init__`` (which imports the floors to register them)."""
    parts = module.split('.')
    if parts[0] == 'tools':
        return FLOORS['tools']
    if parts[0] == PACKAGE and len(parts) > 1:
        return FLOORS.get(parts[1])
    return None


def test_every_package_folder_has_a_floor():
    folders = {p.name for p in (Path(ROOT) / PACKAGE).iterdir()
               if p.is_dir() and (p / '__init__.py').exists()}
    assert folders <= set(FLOORS), f'no floor for {sorted(folders - set(FLOORS))}'


def test_no_module_imports_from_a_higher_floor():
    violations = []
    for path in sorted((Path(ROOT) / PACKAGE).rglob('*.py')):
        own = floor(module_name(path))
        if own is None:
            continue
        for line, target in imported(path):
            other = floor(target)
            if other is not None and other > own:
                violations.append(f'{path.relative_to(ROOT)}:{line} imports {target}')
    assert not violations, 'imports from a higher floor:\n' + '\n'.join(violations)


def test_the_floor_check_sees_relative_and_lazy_imports(monkeypatch):
    module = Path(ROOT) / PACKAGE / 'engine' / 'hooks' / '__init__.py'
    source = 'def f():\n    from ...benchmark.measure import x\nfrom . import y\n'
    monkeypatch.setattr(Path, 'read_text', lambda self: source)
    assert sorted(imported(module)) == [(2, f'{PACKAGE}.benchmark.measure'),
                                        (3, f'{PACKAGE}.engine.hooks.y')]


def test_importing_the_package_leaves_the_benchmark_out():
    """benchmark/__init__.py says it is not imported by ``import dinolora_mmseg``."""
    code = (f'import sys, {PACKAGE}; '
            f'print(sorted(m for m in sys.modules if m.startswith("{PACKAGE}.benchmark")))')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '[]'
