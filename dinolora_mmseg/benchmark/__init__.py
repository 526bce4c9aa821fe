"""What ``tools/analysis_tools/benchmark.py`` measures with; the floor above engine, left out
by ``import dinolora_mmseg`` (``tests/test_floors.py``)."""
