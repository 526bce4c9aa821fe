import pytest
import torch
from mmseg.registry import MODELS

from dinolora_mmseg.models import LinearHead, ViTFPN


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
    with pytest.raises(ValueError, match='expects 4 input'):
        neck([torch.randn(1, 8, 4, 4)])


def test_vit_fpn_feeds_mmseg_heads():
    neck = MODELS.build(dict(type='ViTFPN', in_channels=32, out_channels=16)).eval()
    head = MODELS.build(dict(type='UPerHead', in_channels=[16] * 4, in_index=[0, 1, 2, 3],
                             channels=16, num_classes=5, norm_cfg=dict(type='BN'))).eval()
    feats = neck([torch.randn(1, 32, 9, 12)])
    assert head(feats).shape == (1, 5, 32, 42)  # stride 4 of 126x168
