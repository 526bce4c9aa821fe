import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import accuracy
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from dinolora_mmseg.models import LinearHead, ViTFPN
from dinolora_mmseg.models.decode_heads.linear_head import bilinear_resize, top1_accuracy


@pytest.mark.parametrize('grid', [(5, 5), (4, 9)])
def test_linear_head_single_input(grid):
    head = LinearHead(in_channels=32, num_classes=7)
    logits = head([torch.randn(2, 32, *grid)])
    assert logits.shape == (2, 7, *grid)
    assert head.conv_seg.kernel_size == (1, 1) and head.conv_seg.in_channels == 32


def test_linear_head_concatenates_resized_inputs_after_batch_norm():
    head = LinearHead(in_channels=[8, 8, 16], in_index=[0, 1, 2], input_transform='resize_concat',
                      num_classes=3, norm_cfg=dict(type='BN')).eval()
    inputs = [torch.randn(1, 8, 6, 4), torch.randn(1, 8, 3, 2), torch.randn(1, 16, 6, 4)]
    assert head(inputs).shape == (1, 3, 6, 4)
    assert isinstance(head.norm, torch.nn.BatchNorm2d) and head.norm.num_features == 32
    assert head.conv_seg.in_channels == 32


def test_linear_head_is_one_linear_map_per_pixel():
    head = LinearHead(in_channels=4, num_classes=2).eval()
    x = torch.randn(1, 4, 3, 3)
    expected = torch.einsum('oc,bchw->bohw', head.conv_seg.weight[:, :, 0, 0], x)
    expected = expected + head.conv_seg.bias[None, :, None, None]
    assert torch.allclose(head([x]), expected, atol=1e-6)


def test_linear_head_accepts_channels_equal_to_its_input_width():
    head = MODELS.build(dict(type='LinearHead', in_channels=[8, 8], in_index=[0, 1],
                             input_transform='resize_concat', channels=16, num_classes=3))
    assert head.conv_seg.in_channels == 16
    with pytest.raises(ValueError, match='channels=256, but a linear head has no hidden layer: '
                       'it works at its input width, 32'):
        MODELS.build(dict(type='LinearHead', in_channels=32, channels=256, num_classes=3))


def binary_samples(labels):
    return [SegDataSample(gt_sem_seg=PixelData(data=label)) for label in labels]


def test_linear_head_binary_mode():
    """MMSeg's binary mode: one output channel, sigmoid cross-entropy, a threshold."""
    head = MODELS.build(dict(
        type='LinearHead', in_channels=8, num_classes=2, out_channels=1, threshold=0.4,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)))
    torch.manual_seed(0)
    logits = head([torch.randn(2, 8, 6, 6)])
    assert logits.shape == (2, 1, 6, 6)
    labels = torch.randint(2, (2, 1, 24, 24))
    labels[0, 0, :3] = 255
    ours = head.loss_by_feat(logits, binary_samples(labels))
    mmseg = BaseDecodeHead.loss_by_feat(head, logits, binary_samples(labels))
    torch.testing.assert_close(ours['loss_ce'], mmseg['loss_ce'], rtol=1e-6, atol=1e-6)
    upsampled = F.interpolate(logits, size=(24, 24), mode='bilinear').squeeze(1)
    predicted = upsampled.sigmoid() > 0.4
    labelled = labels.squeeze(1) != 255
    expected = 100 * (predicted == labels.squeeze(1).bool())[labelled].float().mean()
    torch.testing.assert_close(ours['acc_seg'], expected.reshape(1), rtol=1e-5, atol=1e-4)
    ours['loss_ce'].backward()


@pytest.mark.parametrize('grid', [(37, 37), (16, 16), (10, 23)])
@pytest.mark.parametrize('num_inputs', [1, 4])
def test_vit_fpn_levels_cover_the_image(grid, num_inputs):
    neck = ViTFPN(in_channels=32, out_channels=16, num_inputs=num_inputs).eval()
    H, W = 14 * grid[0], 14 * grid[1]
    outs = neck([torch.randn(1, 32, *grid) for _ in range(num_inputs)])
    assert [o.shape for o in outs] == [(1, 16, -(-H // s), -(-W // s)) for s in (4, 8, 16, 32)]


def test_vit_fpn_rescaling_layers():
    neck = ViTFPN(in_channels=64, out_channels=8)
    kinds = [[type(m).__name__ for m in r] for r in neck.rescales]
    assert kinds == [['ConvTranspose2d', 'BatchNorm2d', 'GELU', 'ConvTranspose2d'],
                     ['ConvTranspose2d'], [], ['MaxPool2d']]
    assert [lateral.conv.in_channels for lateral in neck.fpn.lateral_convs] == [16, 32, 64, 64]


def test_vit_fpn_wrong_number_of_inputs():
    with pytest.raises(ValueError, match='1 input or one per level'):
        ViTFPN(in_channels=8, num_inputs=2)
    neck = ViTFPN(in_channels=8, out_channels=8, num_inputs=4)
    with pytest.raises(ValueError, match=r'expects 4 ViT output\(s\): 4 inputs, got 1'):
        neck([torch.randn(1, 8, 4, 4)])


def test_vit_fpn_feeds_mmseg_heads():
    neck = MODELS.build(dict(type='ViTFPN', in_channels=32, out_channels=16)).eval()
    head = MODELS.build(dict(type='UPerHead', in_channels=[16] * 4, in_index=[0, 1, 2, 3],
                             channels=16, num_classes=5, norm_cfg=dict(type='BN'))).eval()
    feats = neck([torch.randn(1, 32, 9, 12)])
    assert head(feats).shape == (1, 5, 32, 42)  # stride 4 of 126x168


@pytest.mark.parametrize('losses', ['one', 'two summed', 'two named', 'ohem'])
def test_linear_head_losses_equal_mmseg(losses):
    """Losses and ``acc_seg`` are those of MMSeg's ``BaseDecodeHead.loss_by_feat``."""
    ce = dict(type='CrossEntropyLoss', loss_weight=1.0)
    loss_decode = dict(one=ce, ohem=ce, **{
        'two summed': [ce, dict(type='CrossEntropyLoss', loss_weight=0.5)],
        'two named': [ce, dict(type='DiceLoss', loss_name='loss_dice')]})[losses]
    sampler = dict(type='OHEMPixelSampler', thresh=0.7, min_kept=100) if losses == 'ohem' else None
    head = LinearHead(in_channels=8, num_classes=5, loss_decode=loss_decode, sampler=sampler)
    torch.manual_seed(0)
    # channels-last, as the 1x1 convolution of ViT tokens gives them
    logits = torch.randn(2, 6, 6, 5).permute(0, 3, 1, 2)
    labels = torch.randint(5, (2, 1, 24, 24))
    labels[0, 0, :3] = 255
    samples = [SegDataSample(gt_sem_seg=PixelData(data=label)) for label in labels]
    ours = head.loss_by_feat(logits, samples)
    mmseg = BaseDecodeHead.loss_by_feat(head, logits, samples)
    assert ours.keys() == mmseg.keys()
    for name in mmseg:
        torch.testing.assert_close(ours[name], mmseg[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_top1_accuracy_equals_mmseg_accuracy(dtype):
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 10, 10).to(dtype)
    labels = torch.randint(7, (3, 10, 10))
    labels[1] = 255  # a fully ignored image
    labels[2, :4] = 255
    labels[0, :5] = logits[0, :, :5].argmax(0)  # half right, half random
    expected = accuracy(logits, labels, ignore_index=255)
    torch.testing.assert_close(top1_accuracy(logits, labels, 255), expected, rtol=0, atol=0)
    all_ignored = torch.full_like(labels, 255)
    torch.testing.assert_close(top1_accuracy(logits, all_ignored, 255),
                               accuracy(logits, all_ignored, ignore_index=255), rtol=0, atol=0)


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('size_in,size_out', [((22, 22), (308, 308)), ((7, 9), (20, 31)),
                                               ((20, 31), (7, 9)), ((5, 6), (5, 6))])
def test_bilinear_resize_equals_interpolate(size_in, size_out, align_corners):
    torch.manual_seed(0)
    x = torch.randn(2, *size_in, 3).permute(0, 3, 1, 2).requires_grad_()
    grad = torch.randn(2, 3, *size_out)
    expected = F.interpolate(x, size=size_out, mode='bilinear', align_corners=align_corners)
    (expected_grad, ) = torch.autograd.grad(expected, x, grad)
    out = bilinear_resize(x, size_out, align_corners)
    (out_grad, ) = torch.autograd.grad(out, x, grad)
    assert out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)
    torch.testing.assert_close(out_grad, expected_grad, rtol=1e-5, atol=1e-5)  # sums of ~200
    if size_in == size_out:
        assert torch.equal(out, x)


def test_bilinear_resize_stays_float32_under_autocast():
    x = torch.randn(1, 3, 6, 6).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = bilinear_resize(x, (24, 24), align_corners=False)
    assert out.dtype == torch.float32
    expected = F.interpolate(x.float(), size=(24, 24), mode='bilinear', align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)
