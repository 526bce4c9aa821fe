#!/usr/bin/env bash
# Usage: dist_train.sh CONFIG NPROC [train.py options]
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500),
# PYTHON (python). Without CUDA the processes use the gloo backend on the CPU; GPUs that
# torch cannot use (driver too old) are refused unless --device cpu or DINOLORA_ALLOW_CPU=1.
set -euo pipefail
TOOLS=$(dirname "$0")
exec bash "$TOOLS/torchrun.sh" "$TOOLS/train.py" "$2" "$1" --launcher pytorch "${@:3}"
