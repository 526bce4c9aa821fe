"""Convert a weight file released by the original DINOv2-LoRA project into an MMSeg checkpoint.

    python tools/import_seed_weights.py large_voc_lora.pt work_dirs/large_voc_lora.pth
    python tools/test.py configs/dinov2_lora_voc.py work_dirs/large_voc_lora.pth

The original files (``large_voc_lora.pt``, ``large_voc_no_lora.pt``,
``large_ade20k_lora.pt`` ...) are flat ``torch.save`` dicts of CUDA ``nn.Parameter``s:
``w_a_000``, ``w_b_000``, ``w_a_001`` ... (LoRA A (r, dim) and B (dim, r); even index =
query, odd = value, in block order; no scaling, i.e. alpha = r) and a 1x1-conv decoder
``classifier.weight`` (classes, dim, 1, 1) / ``classifier.bias`` applied to the
final-normed last-block patch tokens of DINOv2 with 4 registers. The file is read
weights-only on the CPU. The frozen DINOv2 weights come from the config's
``pretrained`` file. The original project's FPN decoder files are not supported.
"""
import argparse
import os
import re

import torch

from dinolora_mmseg.utils import load_weights

ARCHS = {384: ('small', 12), 768: ('base', 12), 1024: ('large', 24), 1536: ('giant', 40)}
CONFIGS = {(21, True): 'configs/dinov2_lora_voc.py', (21, False): 'configs/dinov2_linear_voc.py',
           (150, True): 'configs/dinov2_lora_ade20k.py',
           (150, False): 'configs/dinov2_linear_ade20k.py'}
LORA_KEY = re.compile(r'w_([ab])_(\d{3})')


def convert(state):
    """Map the original keys to ours, checking every shape.

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
    if dim not in ARCHS:
        raise ValueError(f'classifier.weight has {dim} input channels; DINOv2 widths are '
                         f'{sorted(ARCHS)}')
    arch, depth = ARCHS[dim]
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='original .pt file')
    parser.add_argument('out', help='MMSeg checkpoint to write')
    args = parser.parse_args()
    try:
        state, info = convert(load_weights(args.src))
    except ValueError as error:
        raise SystemExit(f'{args.src}: {error}')
    config = CONFIGS.get((info['num_classes'], info['rank'] is not None),
                         'configs/dinov2_lora_voc.py')
    options = []
    if info['arch'] != 'large':
        options += [f'model.backbone.arch={info["arch"]}',
                    f'model.decode_head.in_channels={info["dim"]}',
                    f'model.backbone.pretrained=<dinov2_vit{info["arch"][0]}14_reg4_pretrain.pth>']
    if info['rank'] not in (None, 3):
        options += [f'model.backbone.lora.rank={info["rank"]}',
                    f'model.backbone.lora.alpha={info["rank"]}']
    if info['num_classes'] not in (21, 150):
        options.append(f'model.decode_head.num_classes={info["num_classes"]}')
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save(dict(state_dict=state, meta=dict(imported_from=os.path.abspath(args.src))),
               args.out + '.tmp')
    os.replace(args.out + '.tmp', args.out)
    usage = f'python tools/test.py {config} {args.out}'
    if options:
        usage += ' --cfg-options ' + ' '.join(options)
    print(f'ViT-{info["arch"]} ({info["depth"]} blocks), LoRA rank {info["rank"]}, '
          f'{info["num_classes"]} classes -> {args.out}\n{usage}')


if __name__ == '__main__':
    main()
