#!/usr/bin/env bash
# Idempotent set-up of everything dinolora-mmseg needs, in a virtual environment
# kept outside the clone so that every clone (and CI) on this machine reuses it.
#
#   DINOLORA_HOME  cache folder (default: ~/.cache/dinolora-mmseg)
#   DINOLORA_VENV  virtual environment (default: $DINOLORA_HOME/venv)
#   PYTHON         interpreter that creates the venv (default: python3.11, else python3)
#
# On a CUDA machine mmcv is built with its CUDA ops (FORCE_CUDA=1 when nvcc and a GPU
# are present); elsewhere with its CPU ops. Each step says what failed and exits
# non-zero. A machine that already has everything passes in about a second.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HOME_DIR=${DINOLORA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/dinolora-mmseg}
VENV=${DINOLORA_VENV:-$HOME_DIR/venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
MMCV_VERSION=2.1.0

step() { echo "[setup] $*"; }
fail() { echo "[setup] FAILED: $*" >&2; exit 1; }

stamp_key() {
    cat "$REPO/setup.cfg" "$REPO/tools/misc/setup_env.sh" | sha256sum | cut -c1-16
    echo "$REPO"
}

if [[ -f "$VENV/.dinolora-stamp" ]] && [[ "$(cat "$VENV/.dinolora-stamp")" == "$(stamp_key)" ]]; then
    step "environment up to date: $VENV"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
    step "creating virtual environment $VENV with $PY"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV" || fail "python -m venv $VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
VPY="$VENV/bin/python"

step "build tools (pip, setuptools 77-80 for mmcv's setup.py, wheel, ninja)"
"${PIP[@]}" install -q --upgrade pip "setuptools>=77,<81" wheel ninja \
    || fail "installing pip/setuptools/wheel/ninja"

if ! "$VPY" - <<PYEOF 2>/dev/null
import importlib.metadata as md, sys
want = dict(s.split('==') for s in "$TORCH_SPEC".split())
sys.exit(any(md.version(k).split('+')[0] != v for k, v in want.items()))
PYEOF
then
    step "installing $TORCH_SPEC"
    # shellcheck disable=SC2086
    "${PIP[@]}" install -q $TORCH_SPEC || fail "installing $TORCH_SPEC"
fi

if ! "$VPY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
    CUDA=$("$VPY" -c "import torch; print(int(torch.cuda.is_available()))")
    if [[ "$CUDA" == 1 ]] && command -v nvcc >/dev/null; then FORCE_CUDA=1; else FORCE_CUDA=0; fi
    TORCH_VERSION=$("$VPY" -c "import torch; print(torch.__version__)")
    WHEELS="$HOME_DIR/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-cuda$FORCE_CUDA"
    if ! ls "$WHEELS"/mmcv-*.whl >/dev/null 2>&1; then
        step "building mmcv $MMCV_VERSION with ops (FORCE_CUDA=$FORCE_CUDA); takes about 10 minutes"
        BUILD=$(mktemp -d)
        trap 'rm -rf "$BUILD"' EXIT
        "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD" \
            || fail "downloading the mmcv $MMCV_VERSION sdist"
        tar -xzf "$BUILD"/mmcv-*.tar.gz -C "$BUILD"
        SRC=$(echo "$BUILD"/mmcv-$MMCV_VERSION)
        # torch >= 2.10 headers require C++20; mmcv 2.1.0 hard-codes older standards.
        sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$SRC/setup.py"
        mkdir -p "$WHEELS"
        MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA MAX_JOBS=${MAX_JOBS:-$(nproc)} \
            "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$WHEELS.tmp" "$SRC" \
            || { rm -rf "$WHEELS.tmp"; fail "building mmcv $MMCV_VERSION (log above)"; }
        mv "$WHEELS.tmp"/mmcv-*.whl "$WHEELS"/ && rm -rf "$WHEELS.tmp"
    fi
    step "installing mmcv from $WHEELS"
    "${PIP[@]}" install -q "$WHEELS"/mmcv-*.whl || fail "installing the mmcv wheel"
    "$VPY" -c "import mmcv.ops" || fail "mmcv.ops does not import"
fi

step "installing dinolora-mmseg (editable) with its test extras"
"${PIP[@]}" install -q --no-build-isolation -e "$REPO[tests]" \
    || fail "pip install -e $REPO[tests]"
"$VPY" -c "import dinolora_mmseg" || fail "import dinolora_mmseg"

stamp_key > "$VENV/.dinolora-stamp"
step "done: $VENV"
