"""Convert a weight file released by the original DINOv2-LoRA project into an MMSeg checkpoint
and a config that predicts what the original model predicts.

    python tools/model_converters/dinov2_finetune2mmseg.py large_voc_lora.pt \
        work_dirs/large_voc_lora.pth
    python tools/model_converters/dinov2_finetune2mmseg.py output/dinov3/large_voc_lora.pt \
        work_dirs/dinov3_large_voc_lora.pth --backbone dinov3
    python tools/test.py work_dirs/large_voc_lora.py work_dirs/large_voc_lora.pth

The original files (``large_voc_lora.pt``, ``large_voc_no_lora.pt``,
``large_ade20k_lora.pt`` ...) are flat ``torch.save`` dicts of CUDA ``nn.Parameter``s:
``w_a_000``, ``w_b_000``, ``w_a_001`` ... (LoRA A (r, dim) and B (dim, r); even index =
query, odd = value, in block order; no scaling, i.e. alpha = r) and a 1x1-conv decoder
``classifier.weight`` (classes, dim, 1, 1) / ``classifier.bias`` applied to the
final-normed last-block patch tokens (``x_norm_patchtokens``) of DINOv2 with 4 registers or
of DINOv3 (4 storage tokens). Its LoRA adds ``B(A(x))`` to the query and value thirds of
each block's qkv output; DINOv3's qkv keeps the key third of its bias at zero and gets no
adapter there, which is LoRA on ``('q', 'v')`` here. The file is read weights-only on the
CPU. The original project's FPN decoder files are not supported.

Two files are written: the checkpoint (with ``meta.dataset_meta``: the classes and palette
of MMSeg's Pascal VOC (21 classes) or ADE20k (150) dataset) and, next to it with the
suffix ``.py``, a config based on ``configs/dinov2_{lora,linear}_{voc,ade20k}_original_490.py``
or ``configs/dinov3_{lora,linear}_{voc,ade20k}_original_480.py`` that preprocesses images as
the original project did (RGB / 255, no mean/std, resized to its default 490 x 490 lowered
to a multiple of the patch size: 490 for DINOv2, 480 for DINOv3) and sets the
architecture, LoRA rank and pretrained file the weights need. The frozen weights come from
that pretrained file (``--pretrained``; default the official DINOv2 download, or the
official DINOv3 file name under ``checkpoints/``, of the inferred size).

The original project's DINOv2 and DINOv3 files have the same keys and, for the same size,
the same shapes: the backbone is a stated assumption (``--backbone``; by default DINOv3 if
the file's name or folder says so, as in the original project's ``output/dinov3/``,
else DINOv2).
"""
import argparse
import io
import os.path as osp
import re
from typing import Dict, NamedTuple, Tuple

import torch
from mmseg.datasets import ADE20KDataset, PascalVOCDataset

from dinolora_mmseg.models.backbones import DINOv2, DINOv3
from dinolora_mmseg.utils import load_weights
from dinolora_mmseg.utils.atomic_write import atomic_write_files


class Family(NamedTuple):
    """How the original project ran a backbone family.

    Args:
        name (str): The family's name in messages.
        archs (dict): Width -> (arch, blocks) of the sizes its ``--size`` loads.
        side (int): Its input side: the default 490 lowered to a multiple of the patch.
    """
    name: str
    archs: Dict[int, Tuple[str, int]]
    side: int


FAMILIES = dict(
    dinov2=Family('DINOv2', {384: ('small', 12), 768: ('base', 12), 1024: ('large', 24),
                             1536: ('giant', 40)}, 490),
    dinov3=Family('DINOv3', {384: ('small', 12), 768: ('base', 12), 1024: ('large', 24)}, 480))
DATASETS = {21: ('voc', PascalVOCDataset), 150: ('ade20k', ADE20KDataset)}
CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')
LORA_KEY = re.compile(r'w_([ab])_(\d{3})')


def convert(state, family='dinov2'):
    """Map the original keys to ours, checking every shape.

    Args:
        state (dict[str, torch.Tensor]): The original file's tensors.
        family (str): ``'dinov2'`` or ``'dinov3'``: the backbone the file was trained on.

    Returns:
        tuple: (MMSeg state dict, dict with the inferred ``arch``, ``dim``, ``depth``,
        ``rank`` (None without LoRA) and ``num_classes``)

    Raises:
        ValueError: Unexpected keys or shapes; the message names them.
    """
    unexpected = sorted(k for k in state
                        if not LORA_KEY.fullmatch(k) and k not in ('classifier.weight',
                                                                   'classifier.bias'))
    if unexpected:
        raise ValueError(f'unexpected keys {unexpected[:10]}: expected only w_a_NNN, w_b_NNN, '
                         'classifier.weight and classifier.bias (FPN decoder files are not '
                         'supported)')
    if 'classifier.weight' not in state or 'classifier.bias' not in state:
        raise ValueError('no classifier.weight / classifier.bias: not a decoder file')
    weight, bias = state['classifier.weight'], state['classifier.bias']
    if weight.ndim != 4 or weight.shape[2:] != (1, 1) or bias.shape != weight.shape[:1]:
        raise ValueError(f'classifier.weight {tuple(weight.shape)} / classifier.bias '
                         f'{tuple(bias.shape)}: expected (classes, dim, 1, 1) / (classes,)')
    num_classes, dim = weight.shape[:2]
    archs = FAMILIES[family].archs
    if dim not in archs:
        raise ValueError(f'classifier.weight has {dim} input channels; the '
                         f'{FAMILIES[family].name} widths the original project loads are '
                         f'{sorted(archs)}')
    if num_classes not in DATASETS:
        raise ValueError(f'classifier.weight has {num_classes} classes; the original project '
                         'trains Pascal VOC (21) or ADE20k (150)')
    arch, depth = archs[dim]
    out = {'decode_head.conv_seg.weight': weight.detach().clone(),
           'decode_head.conv_seg.bias': bias.detach().clone()}
    lora = sorted(k for k in state if LORA_KEY.fullmatch(k))
    rank = None
    if lora:
        expected = [f'w_{ab}_{i:03d}' for i in range(2 * depth) for ab in 'ab']
        if lora != sorted(expected):
            missing = sorted(set(expected) - set(lora))
            extra = sorted(set(lora) - set(expected))
            raise ValueError(f'ViT-{arch[0].upper()} has {depth} blocks, so w_a/w_b_000..'
                             f'{2 * depth - 1:03d} are expected; missing {missing[:6]}, '
                             f'extra {extra[:6]}')
        rank = state['w_a_000'].shape[0]
        for key in lora:
            ab, index = LORA_KEY.fullmatch(key).groups()
            shape = (rank, dim) if ab == 'a' else (dim, rank)
            if tuple(state[key].shape) != shape:
                raise ValueError(f'{key} has shape {tuple(state[key].shape)}, expected {shape}')
            block, part = divmod(int(index), 2)
            name = f'backbone.blocks.{block}.attn.qkv.lora_{ab.upper()}.{"qv"[part]}'
            out[name] = state[key].detach().clone()
    return out, dict(arch=arch, dim=dim, depth=depth, rank=rank, num_classes=num_classes)


def dataset_meta(num_classes):
    """Classes and palette of MMSeg's dataset with ``num_classes`` (21: VOC, 150: ADE20k)."""
    metainfo = DATASETS[num_classes][1].METAINFO
    return dict(classes=tuple(metainfo['classes']),
                palette=[list(color) for color in metainfo['palette']])


def official_weights(family, arch):
    """Where the written config takes the frozen weights of ``arch`` from by default: the
    official DINOv2-reg4 download, or the official DINOv3 file name under ``checkpoints/``
    (DINOv3 weights have personal download links)."""
    if family == 'dinov2':
        return DINOv2.official_url(arch, 4)
    return f'checkpoints/{DINOv3.official_filename(arch)}'


def config_text(info, src, pretrained, family='dinov2'):
    """The config for the imported weights: the shipped ``*_original_{490,480}.py`` one with
    the architecture, rank and pretrained file of these weights.

    Args:
        info (dict): What :func:`convert` inferred from the file.
        src (str): The original file, named in a comment.
        pretrained (str, optional): Official-layout file or URL; None: that of
            :func:`official_weights` (inherited for ViT-L).
        family (str): ``'dinov2'`` or ``'dinov3'``.

    Returns:
        tuple[str, str]: (config source, path of the shipped config it is based on)
    """
    kind = 'linear' if info['rank'] is None else 'lora'
    side = FAMILIES[family].side
    dataset = DATASETS[info['num_classes']][0]
    base = osp.join(CONFIG_DIR, f'{family}_{kind}_{dataset}_original_{side}.py')
    backbone = [f'arch={info["arch"]!r}']
    if pretrained or info['arch'] != 'large':
        backbone.append(f'pretrained={pretrained or official_weights(family, info["arch"])!r}')
    if info['rank'] not in (None, 3):
        backbone.append(f'lora=dict(rank={info["rank"]}, alpha={info["rank"]})')
    text = ('# Imported by tools/model_converters/dinov2_finetune2mmseg.py as '
            f'{FAMILIES[family].name} weights from\n# {src}\n'
            f'# The original project\'s input handling (RGB / 255 at {side} x {side}) comes '
            'from _base_.\n'
            f'_base_ = {base!r}\n'
            f'model = dict(\n    backbone=dict({", ".join(backbone)}),\n'
            f'    decode_head=dict(in_channels={info["dim"]}))\n')
    return text, base


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='original .pt file')
    parser.add_argument('out', help='MMSeg checkpoint to write; the config goes next to it '
                        '(same name, .py)')
    parser.add_argument('--backbone', choices=sorted(FAMILIES),
                        help='backbone the file was trained on (default dinov3 if its name or '
                        "folder says so, else dinov2: the original project's DINOv2 and DINOv3 "
                        'files have the same keys)')
    parser.add_argument('--pretrained', help='official-layout file (local path or URL) of that '
                        'backbone for the written config; default the official DINOv2 '
                        'download, or checkpoints/<official DINOv3 file>, of the inferred size')
    return parser.parse_args()


def assumed_family(src):
    """The family of a file given without ``--backbone``, said aloud: DINOv3 if its name or
    folder says so (the original project keeps them in ``output/dinov3/``), else DINOv2."""
    named = osp.join(osp.basename(osp.dirname(osp.abspath(src))), osp.basename(src))
    if 'dinov3' in named.lower():
        print(f'Assuming a DINOv3 file: {named} says so (the original project\'s DINOv2 and '
              'DINOv3 files have the same keys: pass --backbone dinov2 if it holds DINOv2 '
              'weights)')
        return 'dinov3'
    print('Assuming a DINOv2 file (the original project\'s DINOv3 files have the same '
          'keys: pass --backbone dinov3)')
    return 'dinov2'


def main():
    args = parse_args()
    family = args.backbone or assumed_family(args.src)
    config_path = osp.splitext(args.out)[0] + '.py'
    if config_path == args.out:
        raise SystemExit(f'{args.out}: the checkpoint must not end with .py (the config is '
                         'written as <out without suffix>.py)')
    pretrained = args.pretrained
    if pretrained and not pretrained.startswith(('http://', 'https://')):
        if not osp.isfile(pretrained):
            raise SystemExit(f'--pretrained {pretrained}: file not found')
        pretrained = osp.abspath(pretrained)
    try:
        state, info = convert(load_weights(args.src), family)
    except (OSError, ValueError, RuntimeError, EOFError) as error:
        raise SystemExit(f'{args.src}: {str(error) or "the file ends early (empty or truncated)"}')
    text, base = config_text(info, osp.abspath(args.src), pretrained, family)
    meta = dict(imported_from=osp.abspath(args.src), dataset_meta=dataset_meta(info['num_classes']))
    buffer = io.BytesIO()
    torch.save(dict(state_dict=state, meta=meta), buffer)
    atomic_write_files({args.out: buffer.getvalue(), config_path: text.encode()})
    lora = 'no LoRA' if info['rank'] is None else f'LoRA rank {info["rank"]}'
    side = FAMILIES[family].side
    print(f'{FAMILIES[family].name} ViT-{info["arch"]} ({info["depth"]} blocks), {lora}, '
          f'{info["num_classes"]} classes ({DATASETS[info["num_classes"]][0]}) -> {args.out}\n'
          f'Config {config_path}, based on {osp.relpath(base)}: predicts what the original '
          f'model predicts (RGB / 255, {side} x {side}, logits resized to each image)\n'
          f'python tools/test.py {config_path} {args.out}\n'
          f'python tools/misc/infer.py IMAGE --config {config_path} --checkpoint {args.out} '
          '--out OUT_DIR')


if __name__ == '__main__':
    main()
