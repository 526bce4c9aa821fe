"""The mission path on demo data: train -> test -> 2-process dist_test, on the CPU."""
import os
import os.path as osp
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import PYTHON, ROOT, free_port, logged_metrics, official_state_dict, run_tool

TINY_ARCH = 'dict(_delete_=True, embed_dims=192, num_layers=2, num_heads=3)'


def write_config(path, base, data_root, **extra):
    lines = [f"_base_ = '{base}'",
             f"data_root = '{data_root}'",
             'train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False, '
             'dataset=dict(data_root=data_root))',
             'val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, '
             'dataset=dict(data_root=data_root))',
             'test_dataloader = val_dataloader',
             f'model = dict(backbone=dict(arch={TINY_ARCH}), decode_head=dict(in_channels=192))']
    lines += [f'{k} = {v}' for k, v in extra.items()]
    path.write_text('\n'.join(lines) + '\n')
    return path


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    run_tool(PYTHON, 'tools/misc/make_demo_data.py', root / 'data', '--num-train', 24,
             '--num-val', 8)
    voc = root / 'data' / 'VOCdevkit' / 'VOC2012'
    base = osp.join(ROOT, 'configs/demo/dinov2_lora_voc_demo.py')
    config = write_config(root / 'tiny_voc.py', base, voc,
                          train_cfg='dict(max_iters=200, val_interval=200)')
    output = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', root / 'work')
    checkpoint = (root / 'work' / 'last_checkpoint').read_text().strip()
    return dict(root=root, voc=voc, config=config, checkpoint=checkpoint, train_log=output)


def majority_class_miou(voc):
    """mIoU of predicting the most frequent class everywhere on the val split."""
    names = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()
    labels = np.concatenate([np.array(Image.open(voc / 'SegmentationClass' / f'{n}.png')).ravel()
                             for n in names])
    labels = labels[labels != 255]
    counts = np.bincount(labels, minlength=21)
    present = np.count_nonzero(counts)
    return 100 * counts.max() / counts.sum() / present


def test_training_learns_the_demo_classes(demo):
    """The demo scenes tell classes apart by colour and texture only. Predicting the
    majority class scores IoU_bg / #classes (~10 here); separating objects from the
    background without telling their classes apart scores under ~20 (one class
    gets part of the foreground, the rest 0). 50 needs per-class appearance."""
    miou = logged_metrics(demo['train_log'], 'val')['mIoU']
    baseline = majority_class_miou(demo['voc'])
    assert baseline < 20
    assert miou > 50, (miou, baseline)
    assert 'trainable' in demo['train_log'] and 'of which' in demo['train_log']


def test_checkpoint_loads_weights_only_and_carries_random_backbone(demo):
    checkpoint = torch.load(demo['checkpoint'], weights_only=True)
    keys = checkpoint['state_dict'].keys()
    assert 'backbone.blocks.0.attn.qkv.weight' in keys  # random init: no other copy exists
    assert 'backbone.blocks.0.attn.qkv.lora_A.q' in keys


def test_test_and_dist_test_agree(demo):
    val = logged_metrics(demo['train_log'], 'val')
    single = logged_metrics(run_tool(PYTHON, 'tools/test.py', demo['config'], demo['checkpoint'],
                                     '--work-dir', demo['root'] / 'test1'), 'test')
    double = logged_metrics(
        run_tool('bash', 'tools/dist_test.sh', demo['config'], demo['checkpoint'], 2,
                 '--work-dir', demo['root'] / 'test2',
                 env=dict(PYTHON=PYTHON, PORT=str(free_port()))), 'test')
    assert single == double == val


def test_training_prints_no_python_warnings_of_ours(demo):
    ours = [line for line in demo['train_log'].splitlines()
            if 'Warning' in line and 'dinolora_mmseg' in line]
    assert not ours, ours


def test_config_runs_under_mmseg_own_train_script(demo):
    import mmseg
    script = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'train.py')
    work = demo['root'] / 'mmseg_train'
    run_tool(PYTHON, script, demo['config'], '--work-dir', work, '--cfg-options',
             'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
             'default_hooks.checkpoint.interval=2')
    assert (work / 'iter_2.pth').exists()


def test_ade20k_config_trains_one_iteration(demo, tmp_path):
    run_tool(PYTHON, 'tools/misc/make_demo_data.py', tmp_path / 'data', '--format', 'ade',
             '--num-train', 2, '--num-val', 2)
    base = osp.join(ROOT, 'configs/dinov2_lora_ade20k.py')
    config = write_config(tmp_path / 'tiny_ade.py', base,
                          tmp_path / 'data/ade/ADEChallengeData2016',
                          train_cfg='dict(max_iters=1, val_interval=1)',
                          default_hooks='dict(checkpoint=dict(interval=1))')
    config.write_text(config.read_text().replace(
        'dict(batch_size=8', 'dict(batch_size=2').replace(
        'backbone=dict(', "backbone=dict(pretrained=None, "))
    output = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', tmp_path / 'work')
    assert 'Iter(train) [1/1]' in output
    assert 'ADE20KDataset' in output or 'wall' in output
    assert os.path.exists(tmp_path / 'work' / 'iter_1.pth')


def test_checkpoint_with_pretrained_backbone_holds_only_what_trains(demo, tmp_path):
    """ViT-S/14-reg4 from an official-layout file: the checkpoint keeps LoRA and the
    head (well under 5 MB with the optimizer state); test.py restores the rest."""
    weights = tmp_path / 'dinov2_vits14_reg4_pretrain.pth'
    torch.save(official_state_dict(384, 12, 4), weights)
    config = tmp_path / 'small.py'
    config.write_text(demo['config'].read_text().replace(
        f'backbone=dict(arch={TINY_ARCH})', f"backbone=dict(arch='small', pretrained='{weights}')"
    ).replace('in_channels=192', 'in_channels=384'))
    train = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', tmp_path / 'work',
                     '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2')
    checkpoint = tmp_path / 'work' / 'iter_2.pth'
    saved = torch.load(checkpoint, weights_only=True)
    state = saved['state_dict']
    backbone = {k for k in state if k.startswith('backbone.')}
    assert backbone and all('.lora_' in k for k in backbone)
    assert saved['meta']['pretrained_weights']['backbone']['pretrained'] == str(weights)
    assert sum(v.numel() for v in state.values()) == 12 * 2 * 2 * 3 * 384 + 384 * 21 + 21
    assert os.path.getsize(checkpoint) < 5 * 2**20
    test = run_tool(PYTHON, 'tools/test.py', config, checkpoint, '--work-dir', tmp_path / 'test')
    assert logged_metrics(test, 'test') == logged_metrics(train, 'val')
    assert 'missing keys' not in test
    # other pretrained weights of the same shapes: refused, naming both files
    other = tmp_path / 'other.pth'
    torch.save(official_state_dict(384, 12, 4, seed=1), other)
    refused = subprocess.run([PYTHON, 'tools/test.py', config, checkpoint, '--work-dir',
                              tmp_path / 'test', '--cfg-options',
                              f'model.backbone.pretrained={other}'], cwd=ROOT,
                             capture_output=True, text=True, env=dict(os.environ,
                                                                      PYTHONPATH=ROOT))
    assert refused.returncode != 0 and 'mIoU: ' not in refused.stdout
    assert (f'trained on the pretrained weights {weights}' in refused.stderr
            and f'this model loaded {other}' in refused.stderr), refused.stderr[-3000:]


def test_dist_train_runs_two_cpu_processes(demo, tmp_path):
    output = run_tool('bash', 'tools/dist_train.sh', demo['config'], 2, '--work-dir',
                      tmp_path / 'work', '--cfg-options', 'train_cfg.max_iters=2',
                      'train_cfg.val_interval=2', 'train_dataloader.batch_size=2',
                      env=dict(PYTHON=PYTHON, PORT=str(free_port())))
    assert 'rank 0 of 2 runs on the CPU with the gloo backend' in output
    assert (tmp_path / 'work' / 'iter_2.pth').exists()


def test_amp_trains_in_bfloat16_on_cpu(demo, tmp_path):
    # Without the speed check, which refuses CPUs without native bfloat16 (unit-tested).
    output = run_tool(PYTHON, 'tools/train.py', demo['config'], '--amp', '--work-dir', tmp_path,
                      '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                      'optim_wrapper.check_bf16_speed=False')
    assert 'BF16OptimWrapper' in (tmp_path / 'tiny_voc.py').read_text()
    assert logged_metrics(output, 'val')['mIoU'] > 0
