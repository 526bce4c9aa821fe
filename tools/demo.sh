#!/usr/bin/env bash
# The README's main job (smoke run until the training path lands): build the DINOv2
# backbone through MMSeg's registry and print the shapes of its outputs.
set -euo pipefail
PYTHON=${1:-python}
"$PYTHON" - <<'PYEOF'
import torch

import dinolora_mmseg  # noqa: F401  (registers DINOv2 in MMSeg)
from mmseg.registry import MODELS

model = MODELS.build(dict(type='DINOv2', arch='small', num_register_tokens=4,
                          out_indices=(8, 9, 10, 11))).eval()
with torch.no_grad():
    for size in [(518, 518), (480, 640)]:
        outs = model(torch.randn(1, 3, *size))
        print(f'input {size}: ' + ', '.join(str(tuple(o.shape)) for o in outs))
PYEOF
