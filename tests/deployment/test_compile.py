"""compile_segmentor: torch.compile with frozen weights computes what the eager model does,
for the linear heads, Mask2Former (with a spatial prior) and EoMT."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from dinolora_mmseg.deployment import compile_segmentor
from tests.helpers import ROOT, TINY


MASK2FORMER = 'dinov2_lora_mask2former_prior_voc_demo.py'
EOMT = 'dinov2_lora_eomt_voc_demo.py'


@pytest.mark.parametrize('config', ['dinov2_lora_voc_demo.py', 'dinov3_lora_voc_demo.py',
                                    MASK2FORMER, EOMT])
def test_compiled_inference_equals_eager(config):
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo', config))
    cfg.model.backbone.update(arch=dict(TINY), pretrained=None)
    if config == MASK2FORMER:  # the demo's tiny head on 4 outputs of the tiny ViT
        cfg.model.backbone.out_indices = (0, 1, 2, 2)
        cfg.model.neck.in_channels = TINY['embed_dims']
    elif config == EOMT:  # 4 queries in the last 2 of the tiny ViT's 3 blocks
        cfg.model.update(num_blocks=2, mask_annealing=None)  # inference has no masks
        cfg.model.decode_head.update(embed_dims=TINY['embed_dims'], num_queries=4)
    else:
        cfg.model.decode_head.in_channels = TINY['embed_dims']
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'lora_B' in name:  # adapters that change the output (folded on the fly)
                p.normal_(0, 0.2)
    batches = [torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)]
    metas = [dict(img_shape=(64, 96), pad_shape=(64, 96))] * 2
    with torch.no_grad():
        eager = [model.encode_decode(x, metas) for x in batches]
        first_forward_s = compile_segmentor(model)
        compiled = [model.encode_decode(x, metas) for x in batches]
    for a, b in zip(compiled, eager):
        assert a.shape == (2, 21, 64, 96) and (a - b).abs().max() <= 1e-4
    assert list(first_forward_s) == [(2, 3, 64, 96)] and first_forward_s[2, 3, 64, 96] > 0
    with pytest.raises(TypeError, match='--compile takes an EncoderDecoder, got DINOv'):
        compile_segmentor(model.backbone)
