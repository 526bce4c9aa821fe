"""Loading a config as MMSeg's tools do: the front door of every tool of this project."""
import inspect
import logging
import os.path as osp
import re
from functools import lru_cache
from typing import FrozenSet, List, Optional

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner

# The scope of a config without ``default_scope``, as MMSeg's ``init_model`` assumes.
DEFAULT_SCOPE = 'mmseg'
# Top-level keys read outside the Runner: by Config.fromfile (custom_imports), MMSeg's
# and our tools/train.py (runner_type) and tools/test.py (tta_model, tta_pipeline).
TOOL_KEYS = frozenset(('custom_imports', 'runner_type', 'tta_model', 'tta_pipeline'))


@lru_cache(maxsize=None)
def runner_keys() -> FrozenSet[str]:
    """The top-level config keys MMEngine's Runner reads (its ``__init__`` arguments and
    ``cfg.get('...')`` calls) and :data:`TOOL_KEYS`; any other is a plain variable."""
    arguments = set(inspect.signature(Runner.__init__).parameters) - {'self'}
    read = set(re.findall(r"\bcfg\.get\(\s*'(\w+)'", inspect.getsource(Runner)))
    return frozenset(arguments | read | TOOL_KEYS)


def registry_scope(cfg: Config) -> str:
    """The registry scope of the config's types: its ``default_scope``, else ``'mmseg'``."""
    return cfg.get('default_scope') or DEFAULT_SCOPE


def fields_holding(node, value, path: str = '') -> List[str]:
    """Dotted paths (list items by index) of the entries of ``node`` equal to ``value``."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)) and node != value:
        items = enumerate(node)
    else:
        return [path] if path and type(node) is type(value) and node == value else []
    return [found for key, child in items
            for found in fields_holding(child, value, f'{path}.{key}' if path else str(key))]


def warn_ineffective_options(cfg: Config, options: dict) -> None:
    """Warn about ``--cfg-options`` that set a plain variable of the config file (such as
    ``max_iters``: used where the file refers to it when it is read, so setting it later
    changes nothing), naming the fields that hold its value, which are what to set."""
    model_has_preprocessor = 'data_preprocessor' in cfg.get('model', {})
    for key in options:
        name = key.split('.')[0]
        if name not in cfg or (name in runner_keys() and not (
                name == 'data_preprocessor' and model_has_preprocessor)):
            continue
        value = cfg[name]
        holders = [f for f in fields_holding(cfg.to_dict(), value) if f.split('.')[0] != name]
        holders.sort(key=lambda field: not field.endswith('.' + name))  # same name first
        instead = (f'set the field(s) that hold its value instead: {", ".join(holders[:6])}'
                   if holders else 'nothing the Runner reads holds its value')
        print_log(f'--cfg-options {key}={options[key]} has no effect: {name} is a variable '
                  'of the config file, already used where the file refers to it when the file '
                  f'was read; {instead}', logger='current', level=logging.WARNING)


def load_config(path: str, cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None) -> Config:
    """The config at ``path`` as MMSeg's tools load it, with ``default_scope`` set.

    Args:
        path (str): The config file.
        cfg_options (dict, optional): Overrides, dotted key -> value.
        work_dir (str, optional): The work dir; default: the config's, else
            ``./work_dirs/<config name>``.
    """
    cfg = Config.fromfile(path)
    if cfg_options:
        warn_ineffective_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    cfg.default_scope = registry_scope(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg
