"""``torch.compile`` of a segmentor's inference, with inductor's weight freezing."""
import time
from typing import Dict, List, Tuple

import torch
from mmengine.logging import print_log
from mmseg.models.segmentors import EncoderDecoder

from .segmentor_graph import SegmentorGraph


def compile_segmentor(segmentor: EncoderDecoder, freezing: bool = True,
                      dynamic=None) -> Dict[Tuple[int, ...], float]:
    """Run ``segmentor``'s ``encode_decode`` through ``torch.compile`` from now on (in
    place; docs/deployment.md); Mask2Former's pixel decoder, which dynamo fails to trace,
    eagerly (EoMT has none: it compiles whole). Frozen weights (``freezing``, under
    ``torch.no_grad()``) must not change. Returns input shape -> seconds of its first
    forward pass (compilation included).
    """
    if not isinstance(segmentor, EncoderDecoder):
        raise TypeError(f'--compile takes an EncoderDecoder, got {type(segmentor).__name__}')
    pixel_decoder = getattr(segmentor.decode_head, 'pixel_decoder', None)
    if pixel_decoder is not None:
        pixel_decoder.forward = torch.compiler.disable(pixel_decoder.forward)
    graph = SegmentorGraph(segmentor, mean=None, std=None, model_sees_rgb=True)
    compiled = torch.compile(graph, dynamic=dynamic, options={'freezing': freezing})
    first_forward_s: Dict[Tuple[int, ...], float] = {}

    def encode_decode(inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        shape = tuple(inputs.shape)
        start = time.perf_counter()
        scores = compiled(inputs)
        if shape not in first_forward_s:
            first_forward_s[shape] = time.perf_counter() - start
            print_log(f'torch.compile: first forward pass at {"x".join(map(str, shape))} took '
                      f'{first_forward_s[shape]:.1f} s (compilation included)', logger='current')
        return scores

    segmentor.encode_decode = encode_decode
    return first_forward_s
