"""The step the benchmark times: a training step or inference on random inputs, by PyTorch
eagerly, compiled, or in onnxruntime."""
import copy
import os.path as osp
import tempfile
import time
from contextlib import nullcontext
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from torch import nn

from ..deployment import (INPUT_NAME, OUTPUT_NAME, compile_segmentor, export_onnx,
                          onnxruntime_session, segmentor_graph)
from ..models import build_model
from ..models.lora import fold_lora, lora_layers
from ..utils.timing import synchronize
from .measure import count_flops
from .references import build_timm_peft

BACKENDS = ('pytorch', 'compile', 'onnxruntime')


class Workload(NamedTuple):
    """A step to time, its model's parameter counts, the FLOPs of its eager step and the
    seconds of its compilation or export and first step (None if not counted or eager)."""
    step: Callable[[], None]
    params_total: int
    params_trainable: int
    flops_per_step: Optional[int]
    setup_s: Optional[float]


def onnxruntime_step(model: nn.Module, inputs: torch.Tensor,
                     arena: bool = True) -> Tuple[Callable[[], None], float]:
    """A step of ``model`` exported to ONNX, in onnxruntime with torch's thread count, on
    images of ``inputs``' shape; and the seconds the export and the first step took."""
    start = time.perf_counter()
    graph = segmentor_graph(fold_lora(model, inplace=True).eval())
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(inputs.shape, generator=generator) * 255
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'model.onnx')
        export_onnx(graph, images, dynamic=False, size_divisor=1).save(path)
        session = onnxruntime_session(path, torch.get_num_threads(), arena)
    feed = {INPUT_NAME: images.numpy()}

    def step():
        session.run([OUTPUT_NAME], feed)

    step()
    return step, time.perf_counter() - start


def build_workload(cfg: Config, variant: str, mode: str, batch_size: int,
                   img_size: Sequence[int], device: torch.device, amp: bool = False,
                   merge: bool = False, backend: str = 'pytorch',
                   count: bool = False, onnxruntime_arena: bool = True) -> Workload:
    """One training step or inference of ``variant`` on random inputs, as a callable.

    Args:
        cfg (Config): Config of our model (the references are built to match it).
        variant (str): ``'ours'`` or one of :data:`~.references.REFERENCES`
            (``naive-attention`` expects ``Attention.forward`` already patched).
        mode (str): ``'train'`` (forward, loss, backward, optimizer step) or ``'infer'``.
        batch_size (int): Images per step.
        img_size (Sequence[int]): ``(H, W)`` of the inputs.
        device (torch.device): Where to run.
        amp (bool): bfloat16 autocast of the forward pass and loss.
        merge (bool): Fold the LoRA adapters into the weights first.
        backend (str): One of :data:`BACKENDS`; all but ``'pytorch'`` infer only.
        count (bool): Count the FLOPs of the eager PyTorch step.
        onnxruntime_arena (bool): Keep onnxruntime's memory arena (its default).
    """
    H, W = img_size
    if variant == 'timm-peft':
        model = build_timm_peft(cfg, img_size)
    else:
        if variant == 'no-lora':
            cfg = copy.deepcopy(cfg)
            cfg.model.backbone.lora = None
            merge = False
        model = build_model(cfg)
    params_total = sum(p.numel() for p in model.parameters())
    params_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if merge:
        if variant == 'timm-peft':
            model.merge_lora()
        elif next(lora_layers(model), None) is None:
            raise ValueError(f'--merge-lora: {cfg.filename} builds a model without LoRA adapters')
        else:
            fold_lora(model, inplace=True)
    model.to(device).train(mode == 'train')

    generator = torch.Generator(device).manual_seed(0)
    inputs = torch.randn(batch_size, 3, H, W, device=device, generator=generator)
    labels = torch.randint(cfg.model.decode_head.num_classes, (batch_size, H, W),
                           device=device, generator=generator)
    meta = dict(img_shape=(H, W), pad_shape=(H, W), ori_shape=(H, W))
    if variant == 'timm-peft':
        def logits():
            return model(inputs)

        def loss():
            return F.cross_entropy(model(inputs), labels, ignore_index=255)
    else:
        samples = [SegDataSample(metainfo=meta, gt_sem_seg=PixelData(data=label[None]))
                   for label in labels]

        def logits():
            return model.encode_decode(inputs, [meta] * batch_size)

        def loss():
            return model.parse_losses(model.loss(inputs, samples))[0]

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()

    if mode == 'infer':
        def step():
            with torch.no_grad(), autocast():
                logits()
    else:
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

        def step():
            with autocast():
                value = loss()
            optim_wrapper.update_params(value)
    flops = count_flops(step) if count else None
    setup_s = None
    if backend == 'compile':
        start = time.perf_counter()
        compile_segmentor(model)
        step()
        synchronize(device)
        setup_s = time.perf_counter() - start
    elif backend == 'onnxruntime':
        step, setup_s = onnxruntime_step(model, inputs, onnxruntime_arena)
    return Workload(step, params_total, params_trainable, flops, setup_s)
