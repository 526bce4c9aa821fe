#!/usr/bin/env bash
# Here, before a session with a lent GPU machine: put the wheels that machine lacks into
# .device/wheels (git-ignored; name it in the device tool's `carry`). The machine has
# python3 3.12 with torch 2.11.0, timm and peft, no OpenMMLab packages and no network,
# and 15 minutes is too little to build mmcv there; its ops are built here for the
# CPU against the same torch (the benchmark needs none of mmcv's CUDA ops).
#
#   bash .ci/device/prepare.sh        # ~15 minutes the first time, seconds after
set -euo pipefail
cd "$(dirname "$0")/../.."
PY_VERSION=${DEVICE_PYTHON:-3.12}
TORCH=${DEVICE_TORCH:-2.11.0}
MMCV=2.1.0
CACHE=${DINOLORA_HOME:-$HOME/.cache/dinolora-mmseg}
BUILD_VENV=$CACHE/device-build${PY_VERSION/./}
OUT=.device/wheels
mkdir -p "$OUT"

PYTHON=$(command -v "python$PY_VERSION" || ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/$PY_VERSION.*/bin/python 2>/dev/null | tail -1)
[ -x "$PYTHON" ] || { echo "prepare: no Python $PY_VERSION here" >&2; exit 1; }

if ! ls "$OUT"/mmcv-$MMCV-*.whl >/dev/null 2>&1; then
    [ -x "$BUILD_VENV/bin/python" ] || "$PYTHON" -m venv "$BUILD_VENV"
    PIP=("$BUILD_VENV/bin/python" -m pip)
    "$BUILD_VENV/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH')" 2>/dev/null \
        || "${PIP[@]}" install -q "torch==$TORCH"
    "${PIP[@]}" install -q "setuptools>=77,<81" wheel ninja packaging numpy
    SRC=$(mktemp -d)
    "${PIP[@]}" download -q --no-deps --no-binary :all: "mmcv==$MMCV" -d "$SRC"
    tar -xzf "$SRC"/mmcv-*.tar.gz -C "$SRC"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes older standards.
    sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$SRC/mmcv-$MMCV/setup.py"
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$(nproc) \
        "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$OUT" "$SRC/mmcv-$MMCV"
    rm -rf "$SRC"
fi
# Pure-Python packages the machine lacks (the rest of their requirements is there).
pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" -d "$OUT" \
    mmengine==0.10.7 mmsegmentation==1.2.2 imagecorruptions-imaug==1.1.5 addict yapf \
    termcolor prettytable ftfy wcwidth platformdirs
ls -la "$OUT"
du -sh "$OUT"
