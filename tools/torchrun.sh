#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: torchrun SCRIPT with NPROC processes per node.
# Usage: torchrun.sh SCRIPT NPROC [script arguments]
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500),
# PYTHON (python). Without CUDA the processes use the gloo backend on the CPU; GPUs that
# torch cannot use (driver too old) are refused unless --device cpu or DINOLORA_ALLOW_CPU=1.
set -euo pipefail
SCRIPT=$1
NPROC=$2
PORT=${PORT:-29500}
PYTHON=${PYTHON:-python}
if [[ "${NODE_RANK:-0}" == 0 ]] && ! "$PYTHON" -c \
    'import socket, sys; socket.create_server(("", int(sys.argv[1])))' "$PORT" 2>/dev/null; then
    echo "$(basename "$SCRIPT" .py): port $PORT is in use on this machine (another job?); " \
         "choose a free one with PORT=<port>" >&2
    exit 1
fi
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="$PORT" \
    --nproc_per_node="$NPROC" "$SCRIPT" "${@:3}"
