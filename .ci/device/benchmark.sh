#!/usr/bin/env bash
# On a lent GPU machine (device tool, one call): the GPU rows of issue #7. ViT-L/14-reg4
# with LoRA rank 3 on q, v (configs/dinov2_lora_voc.py, random weights) at 518 px:
# train and inference, fp32 and bf16, merged and unmerged, with and without
# checkpointing, against timm + peft and the plain backbone. Each report is appended to
# $OUT/reports.jsonl as soon as it is measured, so a run cut short still returns the
# finished ones (the device tool brings back at most 8 files).
#
#   device run, carry [".device"]:  bash .ci/device/benchmark.sh
#   (bash .ci/device/prepare.sh here first; BENCH_CONFIG/BENCH_SIZE/BENCH_BATCH and
#   BENCH_EXTRA override the workload, e.g. for a CPU rehearsal.)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-work_dirs/device}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! "$PY" -c "import mmseg, mmcv.ops, dinolora_mmseg" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps .device/wheels/*.whl || exit 1
fi
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" \
    | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/device.txt" 2>/dev/null

CONFIG=${BENCH_CONFIG:-configs/dinov2_lora_voc.py}
SIZE=${BENCH_SIZE:-518}
BATCH=${BENCH_BATCH:-8}
# shellcheck disable=SC2206
EXTRA=(${BENCH_EXTRA:-})
REPORT=$(mktemp)
bench() {  # NAME MODE ARGS...: one report into reports.jsonl, its printout into log.txt
    local name=$1 mode=$2
    shift 2
    echo "== $name" | tee -a "$OUT/log.txt"
    "$PY" tools/analysis_tools/benchmark.py "$CONFIG" --mode "$mode" --batch-size "$BATCH" \
        --img-size "$SIZE" "$SIZE" --iters 20 --warmup 5 "${EXTRA[@]}" "$@" \
        --json "$REPORT" 2>&1 | grep -v -i warn | tail -12 | tee -a "$OUT/log.txt"
    [ -s "$REPORT" ] && "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); \
r['name'] = sys.argv[2]; print(json.dumps(r))" "$REPORT" "$name" >> "$OUT/reports.jsonl"
    rm -f "$REPORT"
}
bench train_fp32_peft train --reference timm-peft
bench train_bf16_peft train --amp --reference timm-peft
bench train_fp32_cp train --with-cp --rounds 1
bench train_bf16_cp train --amp --with-cp --rounds 1
bench infer_fp32_peft infer --reference timm-peft
bench infer_bf16 infer --amp --rounds 1
bench infer_merged_vs_plain infer --merge-lora --reference no-lora
bench infer_unmerged_vs_plain infer --reference no-lora
echo "== done" | tee -a "$OUT/log.txt"
