#!/usr/bin/env bash
# Here, before a session with a lent GPU machine: put what that machine lacks into
# .device/ (git-ignored; name it in the device tool's `carry`, 64 MiB in all). The machine
# has python3.12, torch 2.11.0+cu130, nvcc 13.0, timm, peft, onnxruntime and
# transformers, no OpenMMLab packages and no network.
#
#   .device/wheels/    mmcv 2.1.0 with its CPU ops, built here for Python 3.12 against
#                      torch 2.11.0 (debug symbols stripped: its _ext goes from ~80 MB to
#                      ~2 MB); wheels of mmengine, mmsegmentation, mmdet and the small
#                      packages they import, for Python 3.12 (pip download, no deps;
#                      check.sh installs them all with --no-deps)
#   .device/mmcv-src/  mmcv's op sources (csrc/common and ms_deform_attn_cuda.cu, <1 MB):
#                      check.sh builds the CUDA
#                      multi-scale deformable attention alone from them (a CUDA build of
#                      all of mmcv's ops does not fit in the machine's 15 minutes)
#
#   bash .ci/device/prepare.sh            # 31 min the first time here (torch 2.11 download,
#                                         # mmcv build on 2 shared cores), seconds after
#   bash .ci/device/prepare.sh --no-mmcv  # everything but the mmcv build
# DEVICE_PACKAGES replaces the list of downloaded packages (e.g. to drop opencv when the
# machine has cv2: check.sh writes what it has into device.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY_VERSION=${DEVICE_PYTHON:-3.12}
TORCH=${DEVICE_TORCH:-2.11.0}
MMCV=2.1.0
CACHE=${DINOLORA_HOME:-$HOME/.cache/dinolora-mmseg}
BUILD_VENV=$CACHE/device-build${PY_VERSION/./}
OUT=.device/wheels
LIMIT_MIB=64
PACKAGES=${DEVICE_PACKAGES:-"mmengine==0.10.7 mmsegmentation==1.2.2 mmdet==3.3.0
    imagecorruptions-imaug==1.1.5 addict yapf termcolor prettytable terminaltables ftfy
    wcwidth platformdirs pycocotools shapely opencv-python-headless==4.10.0.84"}
# (opencv 4.10 is 50 MB, 5.x 64 MB: over the limit with the rest)
mkdir -p "$OUT"
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT

PYTHON=
for candidate in "$(command -v "python$PY_VERSION")" \
        "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$PY_VERSION".*/bin/python; do
    # (a pyenv shim exists for every installed version but runs only the selected ones)
    if [[ -x "$candidate" ]] && "$candidate" -c pass 2>/dev/null; then PYTHON=$candidate; break; fi
done
[[ -n "$PYTHON" ]] || { echo "prepare: no Python $PY_VERSION here" >&2; exit 1; }
[ -x "$BUILD_VENV/bin/python" ] || "$PYTHON" -m venv "$BUILD_VENV"
PIP=("$BUILD_VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q "setuptools>=77,<81" wheel ninja packaging numpy

# mmcv's source release: its ops sources for the machine, and the CPU build here.
"${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV" -d "$SRC"
tar -xzf "$SRC"/mmcv-*.tar.gz -C "$SRC"
CSRC=.device/mmcv-src/mmcv/ops/csrc
rm -rf .device/mmcv-src && mkdir -p "$CSRC/pytorch/cuda"
cp -r "$SRC/mmcv-$MMCV/mmcv/ops/csrc/common" "$CSRC/"
cp "$SRC/mmcv-$MMCV/mmcv/ops/csrc/pytorch/cuda/ms_deform_attn_cuda.cu" "$CSRC/pytorch/cuda/"

if [[ "${1:-}" != --no-mmcv ]] && ! ls "$OUT"/mmcv-$MMCV-*.whl >/dev/null 2>&1; then
    "$BUILD_VENV/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH')" 2>/dev/null \
        || "${PIP[@]}" install -q "torch==$TORCH"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes older standards.
    sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$SRC/mmcv-$MMCV/setup.py"
    MMCV_WITH_OPS=1 FORCE_CUDA=0 CUDA_VISIBLE_DEVICES='' MAX_JOBS=$(nproc) \
        "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$SRC/built" "$SRC/mmcv-$MMCV"
    "$BUILD_VENV/bin/python" -m wheel unpack -d "$SRC/unpacked" "$SRC"/built/mmcv-*.whl
    strip --strip-debug "$SRC"/unpacked/mmcv-*/mmcv/_ext*.so
    "$BUILD_VENV/bin/python" -m wheel pack -d "$OUT" "$SRC"/unpacked/mmcv-*
fi

# shellcheck disable=SC2086
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp --abi "cp${PY_VERSION/./}" --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$OUT" $PACKAGES
ls -la "$OUT"
SIZE_MIB=$(du -sm .device | cut -f1)
echo "prepare: .device is $SIZE_MIB MiB (the device tool carries $LIMIT_MIB MiB at most)"
if ((SIZE_MIB >= LIMIT_MIB)); then
    echo "prepare: too big to carry; drop what the machine has (DEVICE_PACKAGES)" >&2
    exit 1
fi
