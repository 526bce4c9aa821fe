#!/usr/bin/env bash
# The README's main job on a CPU machine: write the demo data (VOC layout), fine-tune
# the main config shrunk for CPU (configs/demo/dinov2_lora_voc_demo.py), then evaluate
# the checkpoint with dist_test.sh on 2 processes and print MMSeg's IoU table.
# Uses checkpoints/dinov2_vits14_reg4_pretrain.pth when present, else random weights.
set -euo pipefail
PYTHON=${1:-python}
cd "$(dirname "$0")/../.."
CONFIG=configs/demo/dinov2_lora_voc_demo.py
WORK_DIR=work_dirs/dinov2_lora_voc_demo
WEIGHTS=checkpoints/dinov2_vits14_reg4_pretrain.pth
OPTIONS=()
if [[ -f $WEIGHTS ]]; then
    echo "[demo] backbone weights: $WEIGHTS"
    OPTIONS=(--cfg-options "model.backbone.pretrained=$WEIGHTS")
else
    echo "[demo] no $WEIGHTS: the backbone starts from random weights"
fi
"$PYTHON" tools/misc/make_demo_data.py data/demo --format voc
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "${OPTIONS[@]}"
CHECKPOINT=$(cat "$WORK_DIR/last_checkpoint")
PYTHON=$PYTHON bash tools/dist_test.sh "$CONFIG" "$CHECKPOINT" 2 \
    --work-dir "$WORK_DIR/test" "${OPTIONS[@]}"
