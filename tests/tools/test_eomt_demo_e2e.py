"""The EoMT demo config on demo data, on the CPU, with a tiny ViT: it learns with its masks
annealed away before the end, tools/test.py and a 2-process dist_test.sh agree with its
validation, and so do tools/test.py --compile and the ONNX export (LoRA folded) evaluated
by deploy_test.py; onnx_infer.py (without PyTorch) paints the overlays of infer.py (MMSeg's
inferencer)."""
import os.path as osp

import pytest
import torch

from tests.helpers import (PYTHON, ROOT, logged_metrics, official_state_dict,
                           one_and_two_process_metrics, run_tool, write_run_config)
from tests.tools.deployment.test_deployment_e2e import (WITHOUT_TORCH, mostly_equal,
                                                        read_overlays)
from tests.tools.test_train_test_e2e import majority_class_miou

ITERS = 60
# 4 blocks of a 128-wide ViT with 4 registers from an official-layout file; 16 queries in
# the last 2 blocks, their masks annealed over iterations 10..40.
MODEL = ('dict(num_blocks=2, mask_annealing=dict(start_iters=[10, 20], end_iters=[20, 40]), '
         'backbone=dict(arch=dict(_delete_=True, embed_dims=128, num_layers=4, num_heads=2), '
         "pretrained='{}'), decode_head=dict(embed_dims=128))")


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('eomt_demo')
    run_tool(PYTHON, 'tools/misc/make_demo_data.py', root / 'data', '--format', 'voc',
             '--num-train', 24, '--num-val', 8)
    weights = root / 'dinov2_tiny_reg4_pretrain.pth'
    torch.save(official_state_dict(128, 4, num_register_tokens=4), weights)
    voc = root / 'data/VOCdevkit/VOC2012'
    config = write_run_config(root / 'tiny_eomt.py',
                              osp.join(ROOT, 'configs/demo/dinov2_lora_eomt_voc_demo.py'), voc,
                              MODEL.format(weights), iters=ITERS, batch_size=8)
    train = run_tool(PYTHON, 'tools/train.py', config, '--work-dir', root / 'work')
    names = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()
    return dict(root=root, voc=voc, config=config, train=train,
                checkpoint=root / 'work' / f'iter_{ITERS}.pth',
                images=[voc / 'JPEGImages' / f'{name}.jpg' for name in names[:2]])


def test_demo_config_learns(trained):
    """Predicting the majority class scores ~10 mIoU here (see test_train_test_e2e.py)."""
    miou = logged_metrics(trained['train'], 'val')['mIoU']
    baseline = majority_class_miou(trained['voc'])
    assert baseline < 20
    assert miou > 2 * baseline, (miou, baseline)


def test_test_dist_test_compile_onnx_and_overlays_agree(trained):
    root, config, checkpoint = trained['root'], trained['config'], trained['checkpoint']
    val = logged_metrics(trained['train'], 'val')
    single, double = one_and_two_process_metrics(config, checkpoint, root)
    assert single == double == val
    compiled = run_tool(PYTHON, 'tools/test.py', config, checkpoint, '--work-dir',
                        root / 'compiled', '--compile')
    assert 'torch.compile: first forward pass at 1x3x168x224 took' in compiled
    assert logged_metrics(compiled, 'test') == pytest.approx(val, abs=0.01)
    model = root / 'eomt.onnx'
    exported = run_tool(PYTHON, 'tools/deployment/pytorch2onnx.py', config, checkpoint,
                        '--out', model)
    assert 'onnxruntime reproduces PyTorch' in exported
    onnx = run_tool(PYTHON, 'tools/deployment/deploy_test.py', config, model, '--work-dir',
                    root / 'onnx')
    assert logged_metrics(onnx, 'test') == pytest.approx(val, abs=0.01)
    images = trained['images']
    run_tool(PYTHON, 'tools/misc/infer.py', *images, '--config', config, '--checkpoint',
             checkpoint, '--out', root / 'eager', '--device', 'cpu')
    run_tool(PYTHON, '-c', WITHOUT_TORCH, 'tools/deployment/onnx_infer.py', *images,
             '--model', model, '--out', root / 'onnx_overlays')
    mostly_equal(read_overlays(root / 'onnx_overlays', images),
                 read_overlays(root / 'eager', images))
