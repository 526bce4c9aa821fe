"""What ``tools/analysis_tools/benchmark.py`` measures with: timing, FLOPs and memory
(:mod:`.measure`), the workloads it times (:mod:`.workloads`), the implementations it
compares against (:mod:`.references`) and its report (:mod:`.report`). The floor above
engine: nothing of the package imports it, so ``import dinolora_mmseg`` leaves it out
(``tests/test_floors.py``)."""
