#!/usr/bin/env bash
# Usage: dist_test.sh CONFIG CHECKPOINT NPROC [test.py options]
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500),
# PYTHON (python). Without CUDA the processes use the gloo backend on the CPU; GPUs that
# torch cannot use (driver too old) are refused unless --device cpu or DINOLORA_ALLOW_CPU=1.
set -euo pipefail
TOOLS=$(dirname "$0")
exec bash "$TOOLS/torchrun.sh" "$TOOLS/test.py" "$3" "$1" "$2" --launcher pytorch "${@:4}"
