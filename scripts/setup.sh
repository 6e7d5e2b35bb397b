#!/usr/bin/env bash
# One-time, idempotent set-up used by `make demo` and `make test`:
#   1. on Debian/Ubuntu without a display: Xvfb + Mesa + the libraries Qt needs,
#   2. a virtual environment in .venv,
#   3. PyTorch first (so pip never pulls a multi-GB CUDA build by accident),
#   4. napari-unet itself (editable) with the PyQt6 binding, the bioimage.io extra (model packages) and the test
#      tools (PyQt5, deprecated by napari, is removed from venvs an earlier version set up).
# Re-running it is cheap: it skips steps that are already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
STAMP="$VENV/.napari-unet-setup"

need_display_packages() {
  [ -z "${DISPLAY:-}" ] || return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  command -v Xvfb >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' && \
    ldconfig -p 2>/dev/null | grep -q 'libxkbcommon-x11' && ldconfig -p 2>/dev/null | grep -q 'libxcb-cursor' && return 1
  return 0
}

if need_display_packages; then
  echo "[setup] installing Xvfb, Mesa and Qt's X11 libraries (no display found)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3 \
    libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
    libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC (set TORCH_SPEC to choose another build)"
  "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
fi

fingerprint=$(cat setup.cfg pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$fingerprint" ]; then
  echo "[setup] installing napari-unet with PyQt6, the bioimage.io extra and test tools"
  "$VENV/bin/python" -m pip install -q -e ".[pyqt6,bioimageio,testing]"
  "$VENV/bin/python" -m pip uninstall -y -q PyQt5 PyQt5-Qt5 PyQt5-sip >/dev/null 2>&1 || true
  echo "$fingerprint" > "$STAMP"
fi
echo "[setup] ready: $VENV"
