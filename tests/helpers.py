"""Shared test helpers: official-layout DINOv2/DINOv3 checkpoints, running the tools."""
import importlib.util
import os
import re
import socket
import struct
import subprocess
import sys
import zipfile
from typing import Dict, Tuple

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable

TINY = dict(embed_dims=64, num_layers=3, num_heads=2)


def official_shapes(embed_dims: int,
                    num_layers: int,
                    num_register_tokens: int = 0,
                    swiglu: bool = False,
                    grid: int = 37) -> Dict[str, Tuple[int, ...]]:
    """Key names and shapes of the official DINOv2 releases.

    Written from the release format (``dinov2_vit*14[_reg4]_pretrain.pth``), not from
    the model under test, so loading such a file checks the layout too.
    """
    C = embed_dims
    shapes = {
        'cls_token': (1, 1, C),
        'pos_embed': (1, 1 + grid * grid, C),
        'mask_token': (1, C),
        'patch_embed.proj.weight': (C, 3, 14, 14),
        'patch_embed.proj.bias': (C, ),
        'norm.weight': (C, ),
        'norm.bias': (C, ),
    }
    if num_register_tokens:
        shapes['register_tokens'] = (1, num_register_tokens, C)
    hidden = (int(4 * C * 2 / 3) + 7) // 8 * 8 if swiglu else 4 * C
    ffn = ({'mlp.w12.weight': (2 * hidden, C), 'mlp.w12.bias': (2 * hidden, ),
            'mlp.w3.weight': (C, hidden), 'mlp.w3.bias': (C, )} if swiglu else
           {'mlp.fc1.weight': (hidden, C), 'mlp.fc1.bias': (hidden, ),
            'mlp.fc2.weight': (C, hidden), 'mlp.fc2.bias': (C, )})
    block = {'norm1.weight': (C, ), 'norm1.bias': (C, ),
             'attn.qkv.weight': (3 * C, C), 'attn.qkv.bias': (3 * C, ),
             'attn.proj.weight': (C, C), 'attn.proj.bias': (C, ),
             'ls1.gamma': (C, ), 'norm2.weight': (C, ), 'norm2.bias': (C, ),
             'ls2.gamma': (C, ), **ffn}
    for i in range(num_layers):
        shapes.update({f'blocks.{i}.{k}': v for k, v in block.items()})
    return shapes


def official_state_dict(embed_dims: int,
                        num_layers: int,
                        num_register_tokens: int = 0,
                        swiglu: bool = False,
                        grid: int = 37,
                        seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random tensors in the official layout (see :func:`official_shapes`)."""
    shapes = official_shapes(embed_dims, num_layers, num_register_tokens, swiglu, grid)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        fan_in = shape[-1] if key.endswith('weight') and len(shape) == 2 else 1
        scale = 1.0 / fan_in**0.5 if fan_in > 1 else 0.5
        value = torch.randn(shape, generator=g) * scale
        if key.endswith(('norm1.weight', 'norm2.weight', 'norm.weight')):
            value = 1.0 + 0.1 * value
        state[key] = value
    return state


def official_dinov3_shapes(embed_dims: int,
                           num_layers: int,
                           num_heads: int,
                           swiglu: bool = False,
                           mlp_ratio: float = 4.0,
                           swiglu_align: int = 8,
                           qkv_bias: bool = True,
                           local_cls_norm: bool = False) -> Dict[str, Tuple[int, ...]]:
    """Key names and shapes of the official DINOv3 ViT releases.

    Written from the release format (``dinov3_vit*16*_pretrain_*.pth``: 4 storage
    tokens, RoPE periods, a ``bias_mask`` per qkv bias, SwiGLU as ``w1``/``w2``/``w3``,
    ``local_cls_norm`` in the 7B and SAT ViT-L files), not from the model under test.
    """
    C = embed_dims
    shapes = {
        'cls_token': (1, 1, C),
        'storage_tokens': (1, 4, C),
        'mask_token': (1, C),
        'patch_embed.proj.weight': (C, 3, 16, 16),
        'patch_embed.proj.bias': (C, ),
        'rope_embed.periods': (C // num_heads // 4, ),
        'norm.weight': (C, ),
        'norm.bias': (C, ),
    }
    if local_cls_norm:
        shapes.update({'local_cls_norm.weight': (C, ), 'local_cls_norm.bias': (C, )})
    hidden = int(C * mlp_ratio)
    if swiglu:
        hidden = int(hidden * 2 / 3)
        hidden += -hidden % swiglu_align
        ffn = {'mlp.w1.weight': (hidden, C), 'mlp.w1.bias': (hidden, ),
               'mlp.w2.weight': (hidden, C), 'mlp.w2.bias': (hidden, ),
               'mlp.w3.weight': (C, hidden), 'mlp.w3.bias': (C, )}
    else:
        ffn = {'mlp.fc1.weight': (hidden, C), 'mlp.fc1.bias': (hidden, ),
               'mlp.fc2.weight': (C, hidden), 'mlp.fc2.bias': (C, )}
    block = {'norm1.weight': (C, ), 'norm1.bias': (C, ), 'attn.qkv.weight': (3 * C, C),
             'attn.proj.weight': (C, C), 'attn.proj.bias': (C, ), 'ls1.gamma': (C, ),
             'norm2.weight': (C, ), 'norm2.bias': (C, ), 'ls2.gamma': (C, ), **ffn}
    if qkv_bias:
        block.update({'attn.qkv.bias': (3 * C, ), 'attn.qkv.bias_mask': (3 * C, )})
    for i in range(num_layers):
        shapes.update({f'blocks.{i}.{k}': v for k, v in block.items()})
    return shapes


def official_dinov3_state_dict(embed_dims: int, num_layers: int, num_heads: int,
                               seed: int = 0, **arch) -> Dict[str, torch.Tensor]:
    """Random tensors in the official DINOv3 layout (see :func:`official_dinov3_shapes`,
    which ``arch`` is passed to). As in the releases, the RoPE periods are those of base
    100 stored in bfloat16 and each ``bias_mask`` is 1 for the query and value thirds and 0
    for the key third; the biases are random in all three thirds.
    """
    shapes = official_dinov3_shapes(embed_dims, num_layers, num_heads, **arch)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key == 'rope_embed.periods':
            head_dims = embed_dims // num_heads
            exponents = 2 * torch.arange(head_dims // 4, dtype=torch.float32) / (head_dims // 2)
            state[key] = (100.0**exponents).to(torch.bfloat16)
        elif key.endswith('bias_mask'):
            state[key] = torch.ones(shape)
            state[key][embed_dims:2 * embed_dims] = 0
        else:
            fan_in = shape[-1] if key.endswith('weight') and len(shape) == 2 else 1
            value = torch.randn(shape, generator=g) * (fan_in**-0.5 if fan_in > 1 else 0.5)
            if key.endswith('norm.weight') or key.endswith(('norm1.weight', 'norm2.weight')):
                value = 1.0 + 0.1 * value
            state[key] = value
    return state


def write_tiny_config(path, base: str, data_root=None, embed_dims: int = 64,
                      num_layers: int = 2, num_heads: int = 2, **extra):
    """Write a config on ``base`` with a tiny random DINOv2 and a head that fits it.

    With ``data_root``, the dataloaders read it in the main process (no workers), 2
    images a batch for training, 1 for validation and testing. ``extra`` are further
    top-level settings, ``name='python source'``. Returns ``path``.
    """
    arch = (f'dict(_delete_=True, embed_dims={embed_dims}, num_layers={num_layers}, '
            f'num_heads={num_heads})')
    lines = [f"_base_ = '{base}'",
             f'model = dict(backbone=dict(arch={arch}, pretrained=None), '
             f'decode_head=dict(in_channels={embed_dims}))']
    if data_root is not None:
        loader = ('dict(batch_size={}, num_workers=0, persistent_workers=False, '
                  'dataset=dict(data_root={!r}))')
        lines += [f'train_dataloader = {loader.format(2, str(data_root))}',
                  f'val_dataloader = {loader.format(1, str(data_root))}',
                  'test_dataloader = val_dataloader']
    lines += [f'{k} = {v}' for k, v in extra.items()]
    path.write_text('\n'.join(lines) + '\n')
    return path


def write_run_config(path, base: str, data_root, model: str, iters: int, batch_size: int):
    """Write a config on ``base`` that trains for ``iters`` iterations on ``data_root``
    (``batch_size`` images a batch; validation and testing 1; no worker processes), with
    one validation and one checkpoint at the end. ``model`` is the Python source of the
    ``model`` dict merged into the base's. Returns ``path``."""
    loader = ('dict(batch_size={}, num_workers=0, persistent_workers=False, '
              'dataset=dict(data_root=data_root))')
    path.write_text('\n'.join([
        f"_base_ = '{base}'",
        f"data_root = '{data_root}'",
        f'train_dataloader = {loader.format(batch_size)}',
        f'val_dataloader = {loader.format(1)}',
        'test_dataloader = val_dataloader',
        f'model = {model}',
        f'train_cfg = dict(max_iters={iters}, val_interval={iters})',
        f'default_hooks = dict(checkpoint=dict(interval={iters}))']) + '\n')
    return path


def make_demo_voc(root, num_train: int, num_val: int):
    """Demo data in the Pascal VOC layout under ``root``; returns its VOC2012 folder."""
    run_tool(PYTHON, 'tools/misc/make_demo_data.py', root, '--format', 'voc', '--num-train',
             num_train, '--num-val', num_val)
    return root / 'VOCdevkit' / 'VOC2012'


def load_tool(name: str):
    """Import ``tools/<name>.py`` (tools/ is not a package; ``name`` may be in a subfolder,
    e.g. ``'analysis_tools/benchmark'``) as a module."""
    spec = importlib.util.spec_from_file_location(f'tool_{name.replace("/", "_")}',
                                                  os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_tool(*args, env=None, timeout=600) -> str:
    """Run a command of the project (from the repository root); return its output.

    Raises AssertionError with the output when it fails.
    """
    result = subprocess.run([str(a) for a in args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f'{args} failed ({result.returncode}):\n{result.stdout[-5000:]}'
    return result.stdout


def one_and_two_process_metrics(config, checkpoint, root) -> Tuple[Dict[str, float], ...]:
    """The test metrics of ``tools/test.py`` and of a 2-process ``tools/dist_test.sh`` on
    ``checkpoint`` (work dirs ``root/test1`` and ``root/test2``)."""
    single = run_tool(PYTHON, 'tools/test.py', config, checkpoint, '--work-dir', root / 'test1')
    double = run_tool('bash', 'tools/dist_test.sh', config, checkpoint, 2, '--work-dir',
                      root / 'test2', env=dict(PYTHON=PYTHON, PORT=str(free_port())))
    return logged_metrics(single, 'test'), logged_metrics(double, 'test')


def logged_metrics(output: str, mode: str) -> Dict[str, float]:
    """The last ``Iter(val|test)`` metrics line of an MMEngine log as numbers."""
    lines = [line for line in output.splitlines() if f'Iter({mode})' in line and 'mIoU' in line]
    assert lines, f'no Iter({mode}) metrics in:\n{output[-3000:]}'
    return {k: float(v) for k, v in re.findall(r'(aAcc|mIoU|mAcc): ([\d.]+)', lines[-1])}


def corrupt_a_tensor(path) -> None:
    """Flip one byte in the middle of the largest tensor of a zip-format torch file,
    leaving the zip structure intact (``torch.load`` still reads it)."""
    with zipfile.ZipFile(path) as archive:
        record = max((info for info in archive.infolist() if '/data/' in info.filename),
                     key=lambda info: info.file_size)
    with open(path, 'r+b') as f:
        f.seek(record.header_offset + 26)  # the local header's name and extra lengths
        name, extra = struct.unpack('<HH', f.read(4))
        f.seek(record.header_offset + 30 + name + extra + record.file_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0xFF]))
