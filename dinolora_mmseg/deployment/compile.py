"""``torch.compile`` of a segmentor's inference, with inductor's weight freezing."""
import time
from typing import Dict, List, Tuple

import torch
from mmengine.logging import print_log
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.models.segmentors import EncoderDecoder
from torch import nn

from .segmentor_graph import class_scores


class _ClassScores(nn.Module):
    """Backbone, neck and decode head of a segmentor: its class scores at the input's
    size (:func:`~.segmentor_graph.class_scores`)."""

    def __init__(self, segmentor: EncoderDecoder):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return class_scores(self.segmentor.decode_head, self.segmentor.extract_feat(inputs),
                            inputs.shape[2:])


def compile_segmentor(segmentor: EncoderDecoder, freezing: bool = True,
                      dynamic=None) -> Dict[Tuple[int, ...], float]:
    """Run ``segmentor``'s inference through ``torch.compile`` from now on (in place).

    ``encode_decode`` (what ``predict``, ``inference`` and MMSeg's inferencer call)
    computes the backbone, neck and decode head, to class scores at the input's size
    (what MMSeg's heads resize to in ``'whole'`` and ``'slide'`` mode), as one compiled
    graph. Mask2Former's pixel decoder runs eagerly between compiled parts: it reads its
    levels' sizes with ``torch._shape_as_tensor``, which dynamo fails to trace. With
    ``freezing`` (inductor's weight freezing) the weights become constants of the graph:
    LoRA adapters are folded into them and, on a CPU, the weights are pre-packed for
    oneDNN. Frozen weights must not change
    afterwards, and freezing applies under ``torch.no_grad()`` only (inference).

    The first forward pass of each input shape compiles (logged with its time).

    Args:
        segmentor (EncoderDecoder): The model, with its weights loaded.
        freezing (bool): Inductor's weight freezing.
        dynamic (bool, optional): ``torch.compile``'s ``dynamic``: None compiles for
            the first shape and again, for dynamic shapes, when another one comes.

    Returns:
        dict: input shape -> seconds of its first forward pass (compilation and one
        run), filled in as shapes come.

    Raises:
        TypeError: ``segmentor`` is not an ``EncoderDecoder``.
    """
    if not isinstance(segmentor, EncoderDecoder):
        raise TypeError(f'--compile takes an EncoderDecoder, got {type(segmentor).__name__}')
    head = segmentor.decode_head
    if isinstance(head, Mask2FormerHead):
        head.pixel_decoder.forward = torch.compiler.disable(head.pixel_decoder.forward)
    compiled = torch.compile(_ClassScores(segmentor), dynamic=dynamic,
                             options={'freezing': freezing})
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
