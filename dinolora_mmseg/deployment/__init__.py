"""Export to ONNX and compiled inference of trained segmentors."""
from .compile import compile_segmentor
from .metadata import deploy_metadata, input_divisor, test_resize
from .onnx_export import (INPUT_NAME, OUTPUT_NAME, check_second_size, export_onnx,
                          max_logit_difference, onnxruntime_session, sample_images, staged_onnx)
from .onnxruntime_segmentor import ONNXRuntimeSegmentor
from .segmentor_graph import (SegmentorGraph, build_deploy_segmentor, class_scores,
                              fix_position_tables, segmentor_graph)

__all__ = [
    'INPUT_NAME', 'ONNXRuntimeSegmentor', 'OUTPUT_NAME', 'SegmentorGraph',
    'build_deploy_segmentor', 'check_second_size', 'class_scores', 'compile_segmentor',
    'deploy_metadata', 'export_onnx', 'fix_position_tables', 'input_divisor',
    'max_logit_difference', 'onnxruntime_session', 'sample_images', 'segmentor_graph',
    'staged_onnx', 'test_resize'
]
