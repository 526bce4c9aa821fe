#!/usr/bin/env bash
# Idempotent set-up of everything dinolora-mmseg needs, in a virtual environment
# kept outside the clone so that every clone (and CI) on this machine reuses it.
#
#   DINOLORA_HOME  cache folder (default: ~/.cache/dinolora-mmseg)
#   DINOLORA_VENV  virtual environment (default: $DINOLORA_HOME/venv)
#   PYTHON         interpreter that creates the venv (default: python3.11, else python3)
#
#   FORCE_CUDA     1: build mmcv's CUDA ops without a visible GPU (set TORCH_CUDA_ARCH_LIST);
#                  0: CPU ops only, even where torch sees a GPU
#   TORCH_CUDA_ARCH_LIST  GPUs to build mmcv's CUDA ops for (default: the visible ones)
#
# Where torch sees a GPU, mmcv is built with its CUDA ops, with a CUDA toolkit of
# torch's major version (tools/misc/mmcv_build_plan.py decides, and stops saying what
# to install or set when no such build can work here), and checked to run on the GPU;
# elsewhere with its CPU ops. Each step says what failed and exits non-zero. A machine
# that already has everything passes in about a second; a venv made on a machine with
# other GPUs (or none) is checked again, so one made on a login node gets CUDA ops on
# a GPU node that shares it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HOME_DIR=${DINOLORA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/dinolora-mmseg}
VENV=${DINOLORA_VENV:-$HOME_DIR/venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
MMCV_VERSION=2.1.0
PLANNER="$REPO/tools/misc/mmcv_build_plan.py"

step() { echo "[setup] $*"; }
fail() { echo "[setup] FAILED: $*" >&2; exit 1; }

stamp_key() {
    cat "$REPO/setup.cfg" "$REPO/tools/misc/setup_env.sh" "$PLANNER" | sha256sum | cut -c1-16
    echo "$REPO"
    echo "gpus: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sort | tr '\n' ';')"
    echo "FORCE_CUDA=${FORCE_CUDA:-} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-}"
}

if [[ "${1:-}" == --print-stamp ]]; then  # what marks a venv up to date on this machine
    stamp_key
    exit 0
fi
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

PLAN=$("$VPY" "$PLANNER" plan "$MMCV_VERSION") || exit 1
eval "$PLAN"  # MMCV_KEY, MMCV_FORCE_CUDA, MMCV_ARCH_LIST, MMCV_CUDA_HOME
if ! "$VPY" "$PLANNER" verify "$MMCV_VERSION"; then  # says why not
    WHEELS="$HOME_DIR/wheels/$MMCV_KEY"
    if [[ "$MMCV_FORCE_CUDA" == 1 ]]; then
        BUILD_ENV=(FORCE_CUDA=1 "TORCH_CUDA_ARCH_LIST=$MMCV_ARCH_LIST" "CUDA_HOME=$MMCV_CUDA_HOME")
        WHAT="CUDA ops for $MMCV_ARCH_LIST with $MMCV_CUDA_HOME; a CUDA build takes much longer than the CPU build (not measured here)"
    else  # mmcv's setup.py builds CUDA ops whenever torch sees a GPU: hide it
        BUILD_ENV=(FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=)
        WHAT="CPU ops; takes about 10 minutes on 2 cores"
    fi
    if ! ls "$WHEELS"/mmcv-*.whl >/dev/null 2>&1; then
        step "building mmcv $MMCV_VERSION with $WHAT"
        BUILD=$(mktemp -d)
        trap 'rm -rf "$BUILD"' EXIT
        "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD" \
            || fail "downloading the mmcv $MMCV_VERSION sdist"
        tar -xzf "$BUILD"/mmcv-*.tar.gz -C "$BUILD"
        SRC=$(echo "$BUILD"/mmcv-$MMCV_VERSION)
        # torch >= 2.10 headers require C++20; mmcv 2.1.0 hard-codes older standards.
        sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$SRC/setup.py"
        mkdir -p "$WHEELS"
        env "${BUILD_ENV[@]}" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$WHEELS.tmp" "$SRC" \
            || { rm -rf "$WHEELS.tmp"; fail "building mmcv $MMCV_VERSION (log above)"; }
        mv "$WHEELS.tmp"/mmcv-*.whl "$WHEELS"/ && rm -rf "$WHEELS.tmp"
    fi
    step "installing mmcv from $WHEELS"
    "${PIP[@]}" uninstall -q -y mmcv >/dev/null 2>&1 || true  # another build of the same version
    "${PIP[@]}" install -q "$WHEELS"/mmcv-*.whl || fail "installing the mmcv wheel"
    "$VPY" "$PLANNER" verify "$MMCV_VERSION" || fail "the mmcv just installed does not fit (above)"
fi

step "installing dinolora-mmseg (editable) with its test extras"
"${PIP[@]}" install -q --no-build-isolation -e "$REPO[tests]" \
    || fail "pip install -e $REPO[tests]"
"$VPY" -c "import dinolora_mmseg" || fail "import dinolora_mmseg"

stamp_key > "$VENV/.dinolora-stamp"
step "done: $VENV"
