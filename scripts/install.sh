#!/usr/bin/env bash
# Install what nubes needs on a Debian machine: Debian packages (only those missing, as root),
# then a virtualenv in .venv with the pinned Python packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: scripts/debian-packages.txt, one per line (# comments allowed).
mapfile -t DEBIAN_PACKAGES < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/debian-packages.txt)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# A python3 that can already make virtualenvs (for example a pyenv build) needs no Debian one.
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
  filtered=()
  for pkg in "${missing[@]}"; do
    case $pkg in python3|python3-venv|python3-dev) ;; *) filtered+=("$pkg") ;; esac
  done
  missing=("${filtered[@]}")
fi
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "nubes install: missing Debian packages ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
echo "==> installing nubes and its pinned dependencies into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=23" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import nubes, fastapi, sqlalchemy, schemathesis' \
  || { echo "nubes install: the Python packages did not install" >&2; exit 1; }
echo "==> ready: .venv/bin/nubes"
