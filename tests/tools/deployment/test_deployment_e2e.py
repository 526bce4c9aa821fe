"""tools/deployment on a tiny model trained on the demo data: the exported file gives the
mIoU of tools/test.py, onnx_infer.py paints the overlays of tools/misc/infer.py without
PyTorch or mmseg, and --compile predicts what the eager model does."""
import os.path as osp

import mmcv
import onnx
import onnxruntime
import pytest
import torch
from onnx import helper

from dinolora_mmseg.deployment import ONNXRuntimeSegmentor

from tests.helpers import PYTHON, ROOT, load_tool, logged_metrics, run_tool, write_tiny_config

# Runs a tool with torch, mmcv, mmengine, mmseg and this package impossible to import.
WITHOUT_TORCH = '''
import importlib.abc, runpy, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {'torch', 'mmcv', 'mmengine', 'mmseg', 'dinolora_mmseg'}:
            raise ImportError(f'{name} is blocked')
sys.meta_path.insert(0, Blocked())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Demo data in the VOC layout, a tiny model trained on it for 20 iterations, and its
    ONNX export at the test pipeline's size (168 x 224)."""
    root = tmp_path_factory.mktemp('deployment')
    run_tool(PYTHON, 'tools/misc/make_demo_data.py', root / 'data', '--format', 'voc',
             '--num-train', 4, '--num-val', 3)
    voc = root / 'data' / 'VOCdevkit' / 'VOC2012'
    base = osp.join(ROOT, 'configs/demo/dinov2_lora_voc_demo.py')
    config = write_tiny_config(root / 'tiny_voc.py', base, voc,
                               train_cfg='dict(max_iters=20, val_interval=20)',
                               param_scheduler='[]',
                               default_hooks='dict(checkpoint=dict(interval=20))')
    run_tool(PYTHON, 'tools/train.py', config, '--work-dir', root / 'work')
    checkpoint = root / 'work' / 'iter_20.pth'
    model = root / 'model.onnx'
    output = run_tool(PYTHON, 'tools/deployment/pytorch2onnx.py', config, checkpoint,
                      '--out', model)
    names = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()
    return dict(root=root, config=config, checkpoint=checkpoint, model=model, output=output,
                images=[voc / 'JPEGImages' / f'{name}.jpg' for name in names])


def test_exported_model_gives_the_miou_of_the_pytorch_model(trained):
    assert '--shape not given: 168x224' in trained['output']
    assert 'onnxruntime reproduces PyTorch' in trained['output']
    work = trained['root'] / 'work'
    expected = logged_metrics(run_tool(PYTHON, 'tools/test.py', trained['config'],
                                       trained['checkpoint'], '--work-dir', work), 'test')
    output = run_tool(PYTHON, 'tools/deployment/deploy_test.py', trained['config'],
                      trained['model'], '--work-dir', work)
    assert logged_metrics(output, 'test') == pytest.approx(expected, abs=0.01)
    assert expected['mIoU'] > 0
    compiled = run_tool(PYTHON, 'tools/test.py', trained['config'], trained['checkpoint'],
                        '--work-dir', work, '--compile')
    assert 'torch.compile: first forward pass at 1x3x168x224 took' in compiled
    assert logged_metrics(compiled, 'test') == pytest.approx(expected, abs=0.01)


def read_overlays(folder, images):
    return [mmcv.imread(str(folder / f'{path.stem}.png')).astype(int) for path in images]


def mostly_equal(overlays, expected):
    """Equal but for pixels where float rounding moved the largest of two close logits."""
    for a, b in zip(overlays, expected):
        assert a.shape == b.shape and (a != b).any(-1).mean() < 1e-3


def test_onnx_overlays_are_those_of_infer_without_torch_or_mmseg(trained):
    images, root = trained['images'], trained['root']
    run_tool(PYTHON, 'tools/misc/infer.py', *images, '--config', trained['config'],
             '--checkpoint', trained['checkpoint'], '--out', root / 'eager', '--device', 'cpu')
    expected = read_overlays(root / 'eager', images)
    output = run_tool(PYTHON, '-c', WITHOUT_TORCH, 'tools/deployment/onnx_infer.py', *images,
                      '--model', trained['model'], '--out', root / 'onnx')
    assert '3 overlays written' in output
    mostly_equal(read_overlays(root / 'onnx', images), expected)
    run_tool(PYTHON, 'tools/misc/infer.py', *images, '--config', trained['config'],
             '--checkpoint', trained['checkpoint'], '--out', root / 'compiled', '--device',
             'cpu', '--compile')
    mostly_equal(read_overlays(root / 'compiled', images), expected)


def test_dynamic_size_and_images_larger_than_the_fixed_size(trained):
    root, images = trained['root'], trained['images']
    dynamic = root / 'dynamic.onnx'
    output = run_tool(PYTHON, 'tools/deployment/pytorch2onnx.py', trained['config'],
                      trained['checkpoint'], '--out', dynamic, '--dynamic')
    assert '168x224: ' in output and '182x252: ' in output  # checked at two sizes
    shape = onnxruntime.InferenceSession(str(dynamic)).get_inputs()[0].shape
    assert all(isinstance(side, str) for side in shape[2:])
    infer = load_tool('deployment/onnx_infer')
    infer.infer([str(p) for p in images], str(dynamic), str(root / 'dynamic'))
    infer.infer([str(p) for p in images], str(trained['model']), str(root / 'fixed'))
    mostly_equal(read_overlays(root / 'dynamic', images), read_overlays(root / 'fixed', images))

    # An image that does not fit the fixed size after the test pipeline's resize (a
    # portrait one: 224 x 168) is shrunk to fit; the overlay has the image's size.
    portrait = root / 'portrait.jpg'
    mmcv.imwrite(mmcv.imread(str(images[0])).transpose(1, 0, 2), str(portrait))
    infer.infer([str(portrait)], str(trained['model']), str(root / 'portrait'))
    overlay = mmcv.imread(str(root / 'portrait' / 'portrait.png'))
    assert overlay.shape == (224, 168, 3)
    # The evaluation refuses such images instead.
    segmentor = ONNXRuntimeSegmentor(str(trained['model']))
    with pytest.raises(ValueError, match=r'224x168 \(after the test pipeline\) is larger than '
                       r'the fixed 168x224 input'):
        segmentor.predict(torch.zeros(1, 3, 224, 168))


def test_clear_errors(trained, tmp_path):
    export = load_tool('deployment/pytorch2onnx')
    with pytest.raises(ValueError, match='--shape 100 150 is not a multiple of 14.*112 154'):
        export.main([str(trained['config']), str(trained['checkpoint']), '--out',
                     str(tmp_path / 'model.onnx'), '--shape', '100', '150'])
    assert not (tmp_path / 'model.onnx').exists()
    infer = load_tool('deployment/onnx_infer')
    foreign = tmp_path / 'foreign.onnx'
    graph = helper.make_graph([helper.make_node('Identity', ['image'], ['logits'])], 'g',
                              [helper.make_tensor_value_info('image', 1, [1, 3, 2, 2])],
                              [helper.make_tensor_value_info('logits', 1, [1, 3, 2, 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)],
                                ir_version=8), str(foreign))
    with pytest.raises(ValueError, match='has no .*classes.* in its metadata'):
        infer.infer([str(trained['images'][0])], str(foreign), str(tmp_path / 'out'))
    with pytest.raises(FileNotFoundError, match='Image not found'):
        infer.infer([str(tmp_path / 'missing.jpg')], str(trained['model']), str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()
