"""What ``tools/analysis_tools/benchmark.py`` measures with: timing, FLOPs and memory
(:mod:`.measure`), the workloads it times (:mod:`.workloads`) and the implementations it
compares against (:mod:`.references`). Not imported by ``import dinolora_mmseg``."""
