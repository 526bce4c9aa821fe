"""On the lent GPU machine (.ci/device/check.sh puts this folder on PYTHONPATH): give
mmcv's CPU-only build the CUDA deformable attention in every Python process, when
DINOLORA_MSDA_SRC (mmcv's source release) and DINOLORA_MSDA_BUILD (the build cache)
are set. See msda_cuda.py."""
import os
import sys

if os.environ.get('DINOLORA_MSDA_SRC'):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from msda_cuda import install
    install(os.environ['DINOLORA_MSDA_SRC'], os.environ['DINOLORA_MSDA_BUILD'])
