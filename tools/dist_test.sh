#!/usr/bin/env bash
# Usage: dist_test.sh CONFIG CHECKPOINT NPROC [test.py options]
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500),
# PYTHON (python). Without CUDA the processes use the gloo backend on the CPU.
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
