from .onnxruntime_segmentor import ONNXRuntimeSegmentor

__all__ = ['ONNXRuntimeSegmentor']
