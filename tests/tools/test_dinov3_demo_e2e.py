"""The DINOv3 demo config on demo data: train -> test -> 2-process dist_test, on the CPU."""
import os.path as osp

import torch

from dinolora_mmseg.utils.fingerprint import decode_record
from tests.helpers import (PYTHON, ROOT, free_port, logged_metrics, official_dinov3_state_dict,
                           run_tool)

# A 2-block DINOv3 with 4 storage tokens and RoPE, from an official-layout file.
TINY_ARCH = 'dict(_delete_=True, embed_dims=96, num_layers=2, num_heads=2)'


def test_demo_config_trains_and_tests_alike(tmp_path):
    run_tool(PYTHON, 'tools/make_demo_data.py', tmp_path / 'data', '--num-train', 8,
             '--num-val', 4)
    weights = tmp_path / 'dinov3_tiny_pretrain.pth'
    torch.save(official_dinov3_state_dict(96, 2, 2), weights)
    config = tmp_path / 'tiny_dinov3.py'
    loader = ('dict(batch_size={}, num_workers=0, persistent_workers=False, '
              'dataset=dict(data_root=data_root))')
    config.write_text('\n'.join([
        f"_base_ = '{osp.join(ROOT, 'configs/demo/dinov3_lora_voc_demo.py')}'",
        f"data_root = '{tmp_path / 'data/VOCdevkit/VOC2012'}'",
        f'train_dataloader = {loader.format(4)}',
        f'val_dataloader = {loader.format(1)}',
        'test_dataloader = val_dataloader',
        f"model = dict(backbone=dict(arch={TINY_ARCH}, pretrained='{weights}'), "
        'decode_head=dict(in_channels=96))',
        'train_cfg = dict(max_iters=20, val_interval=20)',
        'default_hooks = dict(checkpoint=dict(interval=20))']) + '\n')
    train = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', tmp_path / 'work')
    assert 'DINOv3: loaded pretrained weights' in train
    checkpoint = tmp_path / 'work' / 'iter_20.pth'
    state = torch.load(checkpoint, weights_only=True)['state_dict']
    # LoRA on q and v of both blocks and the head: the frozen weights (and the RoPE
    # periods) come from the pretrained file again, which the checkpoint names.
    assert decode_record(state.pop('backbone._extra_state'))['pretrained'] == str(weights)
    assert {k for k in state if k.startswith('backbone.')} == {
        f'backbone.blocks.{i}.attn.qkv.lora_{m}.{t}' for i in range(2) for m in 'AB'
        for t in 'qv'}
    assert sum(v.numel() for v in state.values()) == 2 * 2 * 2 * 3 * 96 + 96 * 21 + 21
    val = logged_metrics(train, 'val')
    single = logged_metrics(run_tool(PYTHON, 'tools/test.py', config, checkpoint,
                                     '--work-dir', tmp_path / 'test1'), 'test')
    double = logged_metrics(
        run_tool('bash', 'tools/dist_test.sh', config, checkpoint, 2,
                 '--work-dir', tmp_path / 'test2',
                 env=dict(PYTHON=PYTHON, PORT=str(free_port()))), 'test')
    assert single == double == val
    assert val['mIoU'] > 0
