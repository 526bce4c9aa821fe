"""ONNX export of tiny DINOv2 (with and without registers) and DINOv3 segmentors, linear
and FPN heads (also with a spatial prior) and EoMT: onnxruntime against the PyTorch model
as MMSeg runs it, LoRA folded in, at a non-square fixed size and with --dynamic.
Mask2Former: the segmentor graph computes what MMSeg's predict does, and its export is
refused by name."""
import os.path as osp

import numpy as np
import onnx
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from dinolora_mmseg.deployment import (build_deploy_segmentor, check_second_size,
                                       class_scores, export_onnx, fix_position_tables,
                                       max_logit_difference, onnxruntime_session,
                                       sample_images, segmentor_graph, staged_onnx)
from dinolora_mmseg.models.lora import LoRALinear
from tests.helpers import ROOT, TINY

CONFIGS = {
    'dinov2': ('configs/demo/dinov2_lora_voc_demo.py', dict(num_register_tokens=0)),
    'dinov2_reg4': ('configs/demo/dinov2_lora_voc_demo.py', {}),
    'dinov3': ('configs/demo/dinov3_lora_voc_demo.py', {}),
    'dinov2_reg4_fpn': ('configs/dinov2_lora_fpn_voc.py', dict(out_indices=(0, 1, 2))),
    'dinov2_reg4_prior_fpn': ('configs/dinov2_lora_fpn_voc.py',
                              dict(out_indices=(0, 1, 2, 2), spatial_prior=dict(channels=8))),
    'dinov2_reg4_eomt': ('configs/demo/dinov2_lora_eomt_voc_demo.py', {}),
    'dinov3_eomt': ('configs/demo/dinov2_lora_eomt_voc_demo.py', {}),
}


def tiny_config(name):
    path, backbone = CONFIGS[name]
    cfg = Config.fromfile(osp.join(ROOT, path))
    if name == 'dinov3_eomt':  # the EoMT demo on a DINOv3 with its LoRA
        cfg.model.backbone = Config(dict(type='DINOv3', out_indices=-1,
                                         lora=cfg.model.backbone.lora))
        cfg.model.data_preprocessor.test_cfg.size_divisor = 16
    cfg.model.backbone.update(arch=dict(TINY), pretrained=None, **backbone)
    if name.endswith('eomt'):  # 4 queries in the last 2 of the 3 blocks
        cfg.model.update(num_blocks=2, mask_annealing=None)  # inference has no masks
        cfg.model.decode_head.update(embed_dims=TINY['embed_dims'], num_queries=4)
    elif name.endswith('prior_fpn'):  # the spatial prior's maps at strides 4 to 32
        cfg.model.neck.update(in_channels=TINY['embed_dims'], out_channels=16, num_inputs=4,
                              prior_channels=(8, 16, 32, 32))
        cfg.model.decode_head.update(in_channels=[16] * 4, channels=8)
    elif name.endswith('fpn'):
        cfg.model.neck.update(in_channels=TINY['embed_dims'], out_channels=16, num_inputs=3,
                              strides=(8, 16, 32))
        cfg.model.decode_head.update(in_channels=[16] * 3, in_index=[0, 1, 2], channels=8,
                                     feature_strides=[8, 16, 32])
    else:
        cfg.model.decode_head.in_channels = TINY['embed_dims']
    return cfg


@pytest.fixture(scope='module', params=list(CONFIGS))
def exported(request, tmp_path_factory):
    """A tiny model of every kind with every weight random (LoRA factors and BN statistics
    too), its checkpoint, and the model as export prepares it."""
    name = request.param
    cfg = tiny_config(name)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, tensor in model.state_dict(keep_vars=True).items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.4 + 0.1
                             if 'running_var' in key or 'norm' in key and 'weight' in key else
                             torch.randn(tensor.shape, generator=generator) * 0.2)
    checkpoint = tmp_path_factory.mktemp(name) / 'model.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    return dict(name=name, model=model, folder=checkpoint.parent,
                deploy=lambda: build_deploy_segmentor(cfg, str(checkpoint))[0])


def mmseg_logits(model, rgb):
    """Logits of ``model`` for RGB images as MMSeg's test step computes them from the
    BGR images its pipeline loads (the data preprocessor, then ``encode_decode``)."""
    data = dict(inputs=list(rgb.flip(1)), data_samples=[SegDataSample() for _ in rgb])
    inputs = model.data_preprocessor(data, False)['inputs']
    meta = dict(img_shape=inputs.shape[2:], pad_shape=inputs.shape[2:])
    with torch.no_grad():
        return model.encode_decode(inputs, [meta] * len(rgb))


def fixed_size(name):
    return (64, 96) if name.startswith('dinov3') else (56, 84)  # a 4x6 grid, not square


def test_fixed_size_export_equals_pytorch_with_lora_folded(exported):
    deploy, name = exported['deploy'](), exported['name']
    assert not any(isinstance(m, LoRALinear) for m in deploy.modules())
    images = sample_images(fixed_size(name), 2)
    expected = mmseg_logits(exported['model'], images)
    graph = segmentor_graph(deploy)
    path = exported['folder'] / 'fixed.onnx'
    export_onnx(graph, images[:1], dynamic=False, size_divisor=14).save(str(path))
    session = onnxruntime_session(str(path))
    assert session.get_inputs()[0].shape[1:] == [3, *fixed_size(name)]
    # Exported from one image, it runs on two: the batch size is free.
    assert max_logit_difference(session, graph, images, expected) <= 1e-4
    # The tolerance is small against the logits (EoMT's: sums of query probabilities).
    assert expected.abs().max() > (0.1 if name.endswith('eomt') else 1)

    # The file holds the merged weights once: no adapter tensors, nothing else of size.
    weights = onnx.load(str(path)).graph.initializer
    assert not any('lora' in w.name for w in weights)
    floats = sum(int(np.prod(w.dims)) for w in weights if w.data_type == onnx.TensorProto.FLOAT)
    state = {k: v for k, v in deploy.state_dict().items() if v.is_floating_point()}
    # + the mean and std, and the scale of queries and keys in the attention
    expected_floats = sum(v.numel() for v in state.values()) + 6 + 1
    backbone = deploy.backbone
    h, w = (side // backbone.patch_size for side in fixed_size(name))
    if name.startswith('dinov3'):  # the RoPE periods become sin and cos tables of the grid
        expected_floats += 2 * h * w * TINY['embed_dims'] // TINY['num_heads']
        expected_floats -= backbone.rope_embed.periods.numel()
    else:  # the position embedding is resized to the grid once
        expected_floats += (1 + h * w - backbone.pos_embed.shape[1]) * TINY['embed_dims']
    if name.endswith('fpn'):  # each BN's 4 vectors become the bias of the convolution before
        # it, or go into the bias that convolution has (ViTFPN's transposed convolutions)
        for key, value in state.items():
            if 'running_mean' in key:
                expected_floats -= (4 if key.startswith('neck.rescales.') else 3) * value.numel()
    assert floats == expected_floats


def test_dynamic_export_runs_at_other_sizes_or_names_the_operator(exported):
    graph = segmentor_graph(exported['deploy']())
    divisor = graph.segmentor.backbone.patch_size
    images = sample_images((3 * divisor, 5 * divisor), 2)
    unsupported = {'dinov2': r'aten::upsample_bicubic2d with a scale factor',
                   'dinov2_reg4_fpn': r'decode_head.scale_heads.1.1 \(mmseg Upsample',
                   'dinov2_reg4_prior_fpn': r'decode_head.scale_heads.1.1 \(mmseg Upsample'}
    if exported['name'] in unsupported:
        with pytest.raises(ValueError, match=unsupported[exported['name']]):
            export_onnx(graph, images, dynamic=True, size_divisor=divisor)
        return
    path = exported['folder'] / 'dynamic.onnx'
    export_onnx(graph, images, dynamic=True, size_divisor=divisor).save(str(path))
    session = onnxruntime_session(str(path))
    assert max_logit_difference(session, graph, images) <= 1e-4
    size, difference = check_second_size(session, graph, images, divisor, 1e-4)
    assert size == (4 * divisor, 7 * divisor) and difference <= 1e-4


def test_fixed_tables_refuse_another_grid(exported):
    backbone = exported['deploy']().backbone
    fix_position_tables(backbone, fixed_size(exported['name']))
    with pytest.raises(ValueError, match=r'prepared for a 4x6 patch grid .* got 5x6'):
        backbone(torch.zeros(1, 3, 5 * backbone.patch_size, 6 * backbone.patch_size))


def test_a_failed_check_leaves_the_existing_file(tmp_path):
    program = torch.onnx.export(torch.nn.Conv2d(3, 2, 1).eval(), (torch.zeros(1, 3, 4, 4), ),
                                dynamo=True, verbose=False)
    out = tmp_path / 'model.onnx'
    out.write_bytes(b'previous model')
    with pytest.raises(RuntimeError, match='check failed'):
        with staged_onnx(program, str(out), {'classes': '[]'}) as staged:
            assert onnx.load(staged).metadata_props[0].key == 'classes'
            raise RuntimeError('check failed')
    assert out.read_bytes() == b'previous model'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.onnx']
    with staged_onnx(program, str(out), {'classes': '["a"]'}):
        pass
    assert onnx.load(str(out)).metadata_props[0].value == '["a"]'


def tiny_mask2former():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo/dinov2_lora_mask2former_voc_demo.py'))
    cfg.model.backbone.update(arch=dict(TINY), pretrained=None, out_indices=(0, 1, 2, 2))
    cfg.model.neck.in_channels = TINY['embed_dims']
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def test_mask2former_graph_computes_what_mmseg_predicts():
    """Query masks resized before the sigmoid, as Mask2FormerHead.predict does (resizing
    its low-resolution combination instead would differ)."""
    model = tiny_mask2former()
    images = sample_images((56, 84), 2)
    expected = mmseg_logits(model, images)
    with torch.no_grad():
        logits = segmentor_graph(model)(images)
    assert logits.shape == (2, 21, 56, 84)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 56, 84))
        padded = class_scores(model.decode_head, feats, (70, 84))
        meta = dict(img_shape=(56, 84), pad_shape=(70, 84))
        predicted = model.decode_head.predict(feats, [meta], model.test_cfg)
    torch.testing.assert_close(padded, predicted, rtol=0, atol=1e-6)


def test_mask2former_export_is_refused_by_name():
    graph = segmentor_graph(tiny_mask2former())
    with pytest.raises(ValueError, match=r'ONNX export of Mask2Former is not supported: .*'
                       r'torch._shape_as_tensor.*with --compile'):
        export_onnx(graph, sample_images((56, 84), 1), dynamic=False, size_divisor=14)
