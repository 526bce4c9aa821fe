"""What ``tools/analysis_tools/benchmark.py`` measures with: timing, FLOPs and memory
(:mod:`.measure`), the workloads it times (:mod:`.workloads`), the implementations it
compares against (:mod:`.references`) and its report (:mod:`.report`). Not imported by
``import dinolora_mmseg``."""
