import json
import math
from typing import List, Optional, Tuple

import torch
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import OptSampleList, SampleList

from .onnx_export import INPUT_NAME, OUTPUT_NAME, onnxruntime_session


@MODELS.register_module()
class ONNXRuntimeSegmentor(BaseSegmentor):
    """A file of ``tools/deployment/pytorch2onnx.py`` as an MMSeg segmentor run by
    onnxruntime on the CPU: batches are padded with the file's pad colour to its input
    size, the logits cropped and resized back as ``EncoderDecoder`` does.

    Args:
        onnx_file (str): The exported ``.onnx`` file.
        data_preprocessor (dict, optional): Without ``mean`` and ``std`` (the file
            normalises). Default: ``SegDataPreProcessor`` with ``bgr_to_rgb=True``.
        threads (int, optional): onnxruntime intra-op threads.
        init_cfg (dict, optional): Unused (no weights to initialise).
    """

    def __init__(self, onnx_file: str, data_preprocessor: Optional[dict] = None,
                 threads: Optional[int] = None, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(
            type='mmseg.SegDataPreProcessor', bgr_to_rgb=True), init_cfg=init_cfg)
        if getattr(self.data_preprocessor, '_enable_normalize', False):
            raise ValueError(f'{onnx_file} normalises its input itself: the data preprocessor of '
                             'ONNXRuntimeSegmentor must not (leave out mean and std)')
        self.onnx_file = onnx_file
        self.session = onnxruntime_session(onnx_file, threads)
        meta = {key: json.loads(value)
                for key, value in self.session.get_modelmeta().custom_metadata_map.items()}
        missing = {'pad_value', 'size_divisor', 'align_corners'} - set(meta)
        if missing:
            raise ValueError(f'{onnx_file} has no {sorted(missing)} in its metadata: it was '
                             'not written by tools/deployment/pytorch2onnx.py')
        self.align_corners = meta['align_corners']
        self.size_divisor = meta['size_divisor']
        self.register_buffer('pad_value', torch.tensor(meta['pad_value']).view(1, 3, 1, 1),
                             persistent=False)
        size = self.session.get_inputs()[0].shape[2:]
        self.fixed_size = tuple(size) if all(isinstance(s, int) for s in size) else None

    def input_size(self, height: int, width: int) -> Tuple[int, int]:
        """The file's input size for images of ``height`` x ``width`` (ValueError if they
        are larger than its fixed size)."""
        if self.fixed_size is None:
            d = self.size_divisor
            return math.ceil(height / d) * d, math.ceil(width / d) * d
        H, W = self.fixed_size
        if height > H or width > W:
            raise ValueError(f'an image of {height}x{width} (after the test pipeline) is larger '
                             f'than the fixed {H}x{W} input of {self.onnx_file}: export it '
                             'with a --shape that covers the test images, or with --dynamic')
        return H, W

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        """Logits of the padded ``inputs`` (RGB, 0..255) at the padded size."""
        B, _, h, w = inputs.shape
        H, W = self.input_size(h, w)
        padded = self.pad_value.expand(B, 3, H, W).clone()
        padded[:, :, :h, :w] = inputs
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: padded.cpu().numpy()})[0]
        return torch.from_numpy(out).to(inputs.device)

    def predict(self, inputs: torch.Tensor, data_samples: OptSampleList = None) -> SampleList:
        h, w = inputs.shape[2:]
        if data_samples is None:
            data_samples = [SegDataSample(metainfo=dict(ori_shape=(h, w), img_shape=(h, w)))
                            for _ in range(inputs.shape[0])]
        seg_logits = self.encode_decode(inputs, [s.metainfo for s in data_samples])
        H, W = seg_logits.shape[2:]
        for sample in data_samples:
            sample.set_metainfo(dict(img_padding_size=[0, W - w, 0, H - h], pad_shape=(H, W)))
        return self.postprocess_result(seg_logits, data_samples)

    def _forward(self, inputs: torch.Tensor, data_samples: OptSampleList = None) -> torch.Tensor:
        return self.encode_decode(inputs, [])

    def extract_feat(self, inputs: torch.Tensor):
        raise NotImplementedError(f'{self.onnx_file} gives logits only, no features')

    def loss(self, inputs: torch.Tensor, data_samples: SampleList) -> dict:
        raise NotImplementedError(f'{self.onnx_file} is an exported model: it does not train')
