#!/usr/bin/env bash
# On a lent GPU machine, one device-tool call of at most 8 minutes: what only a CUDA GPU
# can show. Prepared here by `bash .ci/device/prepare.sh` (wheels and mmcv's sources in
# .device/); run as
#
#   device run, carry [".device"], timeout_s 540:  bash .ci/device/check.sh
#   bash .ci/device/check.sh --dry-run      # anywhere: the steps and their time limits
#
# Steps, in order of importance, each under its own time limit and never past the
# overall one (CHECK_BUDGET_S, 480 s), so one that hangs or fails costs only itself:
#   setup        install the carried wheels (pure-Python OpenMMLab packages, mmcv with CPU ops)
#   msda_cuda    build mmcv's CUDA deformable attention alone (torch.utils.cpp_extension)
#                and check it against mmcv's PyTorch version; later steps use it
#   sdpa         SDPA flash (bf16) and memory-efficient (fp32) kernels, DINOv2-L 518 and
#                DINOv3-L 512, forward + backward, with and without with_cp
#   dist_train   tools/dist_train.sh with 1 process: NCCL, --amp
#   resume       --resume of that run onto CUDA, 2 more iterations
#   m2f_amp      the Mask2Former demo config with --amp (deformable attention on the GPU)
#   test_compile tools/test.py --compile on the dist_train checkpoint
#   bench_*      ViT-L/14 at 518 against timm + peft: time and memory ratios
# Results, written as they come (the device tool brings back few files): steps.jsonl
# (one line per step: name, rc, seconds), log.txt (each step's output tail),
# sdpa.jsonl, reports.jsonl (benchmark), device.txt.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
DRY_RUN=0
[[ "${1:-}" == --dry-run ]] && DRY_RUN=1
OUT=${OUT:-work_dirs/device}
PY=${PYTHON:-python3}
BUDGET=${CHECK_BUDGET_S:-480}
DEADLINE=$((SECONDS + BUDGET))
WORK=work_dirs/device_check
DEMO=configs/demo/dinov2_lora_voc_demo.py
M2F=configs/demo/dinov2_lora_mask2former_voc_demo.py
SHORT=(train_cfg.max_iters=4 train_cfg.val_interval=4 default_hooks.checkpoint.interval=2
       default_hooks.logger.interval=1)
HERE=$PWD/.ci/device
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT" "$WORK"

step() {  # NAME LIMIT_S COMMAND...: run under min(LIMIT_S, time left); record the outcome
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    local left=$((DEADLINE - SECONDS))
    ((limit > left)) && limit=$left
    if ((DRY_RUN)); then
        printf 'step %-16s limit %3ss: %s\n' "$name" "$limit" "$*"
        return 0
    fi
    if ((limit < 15)); then
        echo "{\"step\": \"$name\", \"rc\": null, \"skipped\": \"out of time\"}" >> "$OUT/steps.jsonl"
        return 1
    fi
    echo "== $name (limit ${limit}s): $*" >> "$OUT/log.txt"
    timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    grep -v -i 'warn' "$WORK/$name.log" | tail -25 >> "$OUT/log.txt"
    echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start)), \"limit\": $limit}" \
        >> "$OUT/steps.jsonl"
    return $rc
}

if ((!DRY_RUN)); then
    {
        "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
        nvcc --version | tail -2
        "$PY" -c "import importlib.util as u; print('has:', *[m for m in ('cv2', 'scipy', \
'matplotlib', 'skimage', 'numba', 'sklearn', 'shapely', 'pycocotools') if u.find_spec(m)])"
    } > "$OUT/device.txt" 2>&1
fi

step setup 90 bash -c "'$PY' -m pip install -q --no-index --no-deps .device/wheels/*.whl && \
    '$PY' -c 'import mmcv.ops, mmseg.models, mmdet.models, dinolora_mmseg; print(\"imports ok\")'"
step demo_data 30 "$PY" tools/misc/make_demo_data.py data/demo --format voc \
    --num-train 8 --num-val 4
if step msda_cuda 200 env TORCH_CUDA_ARCH_LIST= MAX_JOBS="$(nproc)" "$PY" \
        "$HERE/ms_deform_attn/msda_cuda.py" .device/mmcv-src "$WORK/msda_build"; then
    # Every later Python process gives mmcv the op at start (sitecustomize.py).
    export DINOLORA_MSDA_SRC=$PWD/.device/mmcv-src DINOLORA_MSDA_BUILD=$PWD/$WORK/msda_build
    export PYTHONPATH=$HERE/ms_deform_attn:$PYTHONPATH
fi
step sdpa 150 "$PY" "$HERE/sdpa_kernels.py" --out "$OUT/sdpa.jsonl"
step dist_train 90 bash tools/dist_train.sh "$DEMO" 1 --work-dir "$WORK/train" --amp \
    --cfg-options "${SHORT[@]}"
step resume 60 "$PY" tools/train.py "$DEMO" --work-dir "$WORK/train" --amp --resume \
    --cfg-options train_cfg.max_iters=6 train_cfg.val_interval=6 default_hooks.checkpoint.interval=2
step m2f_amp 100 "$PY" tools/train.py "$M2F" --work-dir "$WORK/m2f" --amp \
    --cfg-options "${SHORT[@]}"
step test_compile 120 "$PY" tools/test.py "$DEMO" "$WORK/train/iter_4.pth" \
    --work-dir "$WORK/test" --compile

bench() {  # NAME ARGS...: one benchmark report into reports.jsonl
    local name=$1 report=$WORK/$1.json
    shift
    step "$name" 120 "$PY" tools/analysis_tools/benchmark.py configs/dinov2_lora_voc.py \
        --batch-size 8 --img-size 518 518 --iters 10 --warmup 3 --rounds 2 \
        --reference timm-peft --json "$report" "$@" || return
    ((DRY_RUN)) || "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); \
r['name'] = sys.argv[2]; print(json.dumps(r))" "$report" "$name" >> "$OUT/reports.jsonl"
}
bench bench_train_bf16 --mode train --amp
bench bench_infer_bf16 --mode infer --amp
bench bench_train_fp32 --mode train
((DRY_RUN)) || echo "== done in $SECONDS s" >> "$OUT/log.txt"
