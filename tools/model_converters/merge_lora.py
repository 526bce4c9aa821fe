"""Fold a checkpoint's LoRA adapters into the backbone weights for deployment.

    python tools/model_converters/merge_lora.py CONFIG CKPT OUT.pth \
        [--format safetensors] [--backbone-only]

OUT loads with the same config and ``lora=None`` and predicts what CKPT predicts::

    python tools/test.py CONFIG OUT.pth --cfg-options model.backbone.lora=None

``--backbone-only`` writes the merged DINOv2 or DINOv3 alone in the official key layout
(``dinov2_vit*14[_reg4]_pretrain.pth``, ``dinov3_vit*16*_pretrain_*.pth``; the tensors the
official models use only in pretraining, such as ``mask_token``, set to neutral values),
readable by anything that reads the official files, e.g. ``DINOv2(pretrained=OUT)``,
``DINOv3(pretrained=OUT)`` or timm; a backbone's spatial prior is not part of that layout
and is left out (the tool says so). A ``.safetensors`` OUT carries a CRC-32 of its data in
its metadata, checked where it loads.
"""
import argparse
import os

import torch
from mmengine.config import Config, DictAction

from dinolora_mmseg.models import build_model, load_model_checkpoint
from dinolora_mmseg.models.backbones.dino_vit_base import DINOViTBase
from dinolora_mmseg.models.lora import fold_lora, lora_layers
from dinolora_mmseg.utils.atomic_write import atomic_output
from dinolora_mmseg.utils.config import load_config
from dinolora_mmseg.utils.checkpoint_file import is_trusted
from dinolora_mmseg.utils.integrity import save_safetensors


def parse_args():
    parser = argparse.ArgumentParser(description='Merge LoRA adapters into the backbone')
    parser.add_argument('config', help='config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint with LoRA adapters')
    parser.add_argument('out', help='output file')
    parser.add_argument('--format', choices=['pth', 'safetensors'], default='pth')
    parser.add_argument('--backbone-only', action='store_true',
                        help='write only the DINOv2 or DINOv3 backbone, in the official key '
                        'layout')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    return parser.parse_args()


def load_lora_model(cfg: Config, checkpoint: str):
    """The model of ``cfg`` (:func:`build_model`), checked for LoRA adapters, with
    ``checkpoint`` loaded; its ``dataset_meta`` is the checkpoint's."""
    model = build_model(cfg)
    if next(lora_layers(model), None) is None:
        raise ValueError(f'{cfg.filename} builds a model without LoRA adapters: nothing to merge')
    load_model_checkpoint(model, checkpoint, trusted=is_trusted(cfg, checkpoint))
    if isinstance(model.backbone, DINOViTBase):
        model.backbone.frozen_weights.keep_in_state_dicts()  # the frozen weights changed
    return model


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    model = load_lora_model(cfg, args.checkpoint)
    if args.backbone_only:
        if not isinstance(model.backbone, DINOViTBase):
            raise ValueError('--backbone-only writes the official DINOv2 or DINOv3 layout; the '
                             f'backbone of {args.config} is {type(model.backbone).__name__}')
        obj = model.backbone.official_state_dict()
        use = f'official {model.backbone.family} layout'
        if model.backbone.spatial_prior is not None:
            count = sum(p.numel() for p in model.backbone.spatial_prior.parameters())
            use += (f'; its spatial prior ({count:,} parameters) is left out, the official '
                    'layout has no place for it: the full merged checkpoint (without '
                    '--backbone-only) keeps it')
    else:
        use = 'load it with the same config and model.backbone.lora=None'
        state = fold_lora(model, inplace=True).state_dict()
        obj = state if args.format == 'safetensors' else dict(
            state_dict=state, meta=dict(dataset_meta=model.dataset_meta,
                                        merged_from=os.path.abspath(args.checkpoint)))
    with atomic_output(args.out) as tmp:
        if args.format == 'safetensors':
            save_safetensors(obj, tmp)
        else:
            torch.save(obj, tmp)
    print(f'wrote {args.out} with the LoRA adapters merged: {use}')

if __name__ == '__main__':
    main()
