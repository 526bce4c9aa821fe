"""ONNX export of a :class:`SegmentorGraph` and the check that onnxruntime computes it
(the file's format: docs/deployment.md)."""
import contextlib
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from mmseg.models.utils import Upsample

from ..datasets.data_checks import read_image_file
from ..models.backbones.dinov2 import DINOv2
from .segmentor_graph import SegmentorGraph, fix_position_tables

INPUT_NAME, OUTPUT_NAME = 'image', 'logits'


def onnxruntime_session(path: str, threads: Optional[int] = None, arena: bool = True):
    """An onnxruntime CPU session of ``path`` with every graph optimisation, ``threads``
    intra-op threads (default onnxruntime's choice) and its memory arena if ``arena``."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = arena
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def check_exportable(graph: SegmentorGraph) -> None:
    """Refuse a Mask2Former head with its pixel decoder, which ``torch.export`` cannot
    trace (ValueError); EoMT's head, without one, exports."""
    if getattr(graph.segmentor.decode_head, 'pixel_decoder', None) is not None:
        raise ValueError(
            'ONNX export of Mask2Former is not supported: mmdet\'s pixel decoder '
            '(MSDeformAttnPixelDecoder) reads the sizes of its levels with '
            'torch._shape_as_tensor and mmcv\'s deformable attention checks and splits its '
            'values by them, which torch.export cannot trace (data-dependent). Run it '
            'compiled instead: tools/test.py or tools/misc/infer.py with --compile')


def check_dynamic_support(graph: SegmentorGraph) -> None:
    """Refuse ``--dynamic`` for a model with an operator the exporter fixes at one size
    (ValueError naming it)."""
    upsamples = [name for name, m in graph.named_modules()
                 if isinstance(m, Upsample) and m.size is None]
    if upsamples:
        raise ValueError(
            f'--dynamic is not supported for this model: {upsamples[0]} (mmseg Upsample, as in '
            "FPNHead's scale heads) computes its output size as int(side * scale_factor), "
            'which the ONNX exporter fixes at the size traced at export. Export at a fixed '
            '--shape (one file per input size)')
    backbone = graph.segmentor.backbone
    if isinstance(backbone, DINOv2) and backbone.interpolate_offset:
        raise ValueError(
            '--dynamic is not supported for this DINOv2 (interpolate_offset='
            f'{backbone.interpolate_offset}, the official models without registers): its '
            'position embedding is resized by aten::upsample_bicubic2d with a scale factor '
            f'computed from the input size ((h + {backbone.interpolate_offset}) / '
            f'{backbone.pos_grid}), which the ONNX exporter turns into a Resize of the size '
            'traced at export. Export at a fixed --shape (one file per input size)')


def export_onnx(graph: SegmentorGraph, example: torch.Tensor, dynamic: bool, size_divisor: int):
    """The ONNX program of ``graph`` at ``example``'s size, the batch size free (``H``
    and ``W`` too, multiples of ``size_divisor``, if ``dynamic``; else the backbone's
    position tables become constants, in place). ValueError from
    :func:`check_exportable`, :func:`check_dynamic_support`, or where the exporter cannot
    keep the size symbolic (with its reason)."""
    check_exportable(graph)
    if example.shape[0] == 1:  # torch.export fixes dimensions of size 1
        example = example.expand(2, -1, -1, -1)
    batch = torch.export.Dim('batch', min=1, max=1024)
    shapes = {0: batch}
    if dynamic:
        check_dynamic_support(graph)
        shapes.update({2: size_divisor * torch.export.Dim('rows', min=1, max=1024),
                       3: size_divisor * torch.export.Dim('cols', min=1, max=1024)})
    else:
        fix_position_tables(graph.segmentor.backbone, example.shape[2:])
    try:
        with torch.no_grad():
            return torch.onnx.export(graph, (example, ), dynamo=True, input_names=[INPUT_NAME],
                                     output_names=[OUTPUT_NAME], dynamic_shapes=(shapes, ),
                                     verbose=False)
    except Exception as error:
        if not dynamic:
            raise
        reason = str(error).strip().splitlines()[0]
        raise ValueError(f'--dynamic: the exporter could not keep the input size symbolic: '
                         f'{reason}. Export at a fixed --shape') from error


@contextlib.contextmanager
def staged_onnx(program, out: str, metadata: Dict[str, str]) -> Iterator[str]:
    """Write the ONNX program with ``metadata`` (key -> JSON text) next to ``out``; yield
    that file to check; then move it (and its weights over 2 GB, ``out + '.data'``, first)
    onto ``out``. If the block raises, nothing is moved."""
    for key, value in metadata.items():
        program.model.metadata_props[key] = value
    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(out)}.', dir=folder)
    try:
        staged = osp.join(tmp, osp.basename(out))
        program.save(staged)
        yield staged
        for name in sorted(os.listdir(tmp), key=lambda name: name == osp.basename(out)):
            os.replace(osp.join(tmp, name), osp.join(folder, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sample_images(size: Sequence[int], batch: int, path: Optional[str] = None) -> torch.Tensor:
    """``(batch, 3, H, W)`` float32 RGB photos to compare runtimes on: ``path`` or
    scikit-image's, resized to ``size``."""
    import cv2
    if path is not None:
        photos = [read_image_file(path)[..., ::-1]] * batch
    else:
        import skimage.data
        names = ('astronaut', 'coffee', 'chelsea', 'rocket')
        photos = [getattr(skimage.data, names[i % len(names)])() for i in range(batch)]
    H, W = size
    resized = [cv2.resize(np.ascontiguousarray(p), (W, H), interpolation=cv2.INTER_AREA)
               for p in photos]
    return torch.from_numpy(np.stack(resized).transpose(0, 3, 1, 2).astype(np.float32))


def max_logit_difference(session, graph: SegmentorGraph, images: torch.Tensor,
                         expected: Optional[torch.Tensor] = None) -> float:
    """Largest absolute difference between the logits of onnxruntime's ``session`` and
    of ``graph`` (or ``expected``, if already computed) for ``images``."""
    if expected is None:
        with torch.no_grad():
            expected = graph(images)
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
    return float(np.abs(actual - expected.numpy()).max())


def check_second_size(session, graph: SegmentorGraph, images: torch.Tensor,
                      size_divisor: int, tolerance: float) -> Tuple[Tuple[int, int], float]:
    """That size and the difference, after checking a dynamic export one and two
    ``size_divisor`` steps larger, with two images (ValueError if onnxruntime fails there
    or differs by more than ``tolerance``)."""
    H, W = images.shape[2:]
    size = (H + size_divisor, W + 2 * size_divisor)
    other = torch.nn.functional.interpolate(images[:1].expand(2, -1, -1, -1), size=size,
                                            mode='bilinear', align_corners=False)
    other[1] = other[1].flip(-1)
    try:
        difference = max_logit_difference(session, graph, other)
    except Exception as error:  # onnxruntime raises its own Fail/RuntimeException types
        raise ValueError(f'--dynamic: the exported file fails at {size[0]}x{size[1]} in '
                         f'onnxruntime: {str(error).strip().splitlines()[0]}') from error
    if difference > tolerance:
        raise ValueError(f'--dynamic: at {size[0]}x{size[1]} the exported file differs from '
                         f'PyTorch by {difference:.3g} (> {tolerance:g}): an operator kept a '
                         'size traced at export. Export at a fixed --shape')
    return size, difference
