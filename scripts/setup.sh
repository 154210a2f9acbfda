#!/usr/bin/env bash
# One-shot, idempotent set-up: Debian packages, a virtual environment, torch (CPU) first,
# then voxid with its dev extras. Safe to run again; it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DEB_PACKAGES=(espeak-ng flite chromium libportaudio2 sox postgresql)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi

stamp="$VENV/.voxid-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # torch first: otherwise a dependency pulls the multi-GB CUDA build from PyPI.
  "$VENV/bin/pip" install -q "torch==${TORCH_VERSION:-2.13.0}"
  "$VENV/bin/pip" install -q -e ".[dev]"
  # Resemblyzer: the peer in benchmarks and the teacher the base model distils from. Its
  # encoder weights ship in the wheel; --no-deps keeps pip from swapping the CPU torch for
  # a CUDA build, and webrtcvad-wheels provides the webrtcvad it imports.
  "$VENV/bin/pip" install -q webrtcvad-wheels
  "$VENV/bin/pip" install -q --no-deps resemblyzer
  touch "$stamp"
fi
echo "setup: ready ($("$VENV/bin/python" -c 'import torch, voxid; print("torch", torch.__version__, "voxid", voxid.__version__)'))"
