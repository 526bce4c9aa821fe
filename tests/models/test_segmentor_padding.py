"""Inputs that are not multiples of the patch size: padded, and cropped off again."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from tests.helpers import ROOT

MAIN = osp.join(ROOT, 'configs/dinov2_lora_voc.py')


def tiny_segmentor(**preprocessor):
    cfg = Config.fromfile(MAIN)
    init_default_scope('mmseg')
    cfg.model.backbone.update(arch=dict(embed_dims=64, num_layers=2, num_heads=2),
                              pretrained=None)
    cfg.model.decode_head.in_channels = 64
    cfg.model.data_preprocessor.update(preprocessor)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        model.decode_head.conv_seg.weight.normal_()
    return model


def predict(model, image):
    shape = tuple(image.shape[-2:])  # a tuple, as pipelines give it (MMSeg reads a torch.Size
    sample = SegDataSample(metainfo=dict(ori_shape=shape, img_shape=shape))  # as "slide")
    with torch.no_grad():
        return model.test_step(dict(inputs=[image], data_samples=[sample]))[0].seg_logits.data


def padded_by_hand(model, image, multiple=14):
    """Normalise, pad bottom/right with zeros (the mean colour) to multiples of the patch
    size, predict on the padded image at its own size, crop the padding off."""
    pre = model.data_preprocessor
    x = (image[[2, 1, 0]].float() - pre.mean) / pre.std
    H, W = x.shape[-2:]
    x = F.pad(x, (0, -W % multiple, 0, -H % multiple))[None]
    with torch.no_grad():
        logits = model.decode_head(model.extract_feat(x))
    logits = F.interpolate(logits, size=x.shape[-2:], mode='bilinear', align_corners=False)
    return logits[0, :, :H, :W]


def test_non_multiple_inputs_predict_as_the_image_padded_by_hand():
    image = torch.randint(0, 256, (3, 100, 130), dtype=torch.uint8)
    model = tiny_segmentor()
    expected = padded_by_hand(model, image)
    torch.testing.assert_close(predict(model, image), expected, rtol=0, atol=1e-5)
    # Without padding in the preprocessor the backbone pads, and the logits of the 112x140
    # padded image are squeezed onto 100x130: what the configs avoid.
    stretched = predict(tiny_segmentor(size_divisor=None, test_cfg=None), image)
    assert (stretched - expected).abs().max() > 0.1


@pytest.mark.parametrize('shape', [(100, 130), (98, 140)])
def test_training_batches_are_padded_to_multiples_of_the_patch(shape):
    model = tiny_segmentor()
    image = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[SegDataSample()]),
                                   training=True)
    assert data['inputs'].shape[-2] % 14 == 0 and data['inputs'].shape[-1] % 14 == 0
