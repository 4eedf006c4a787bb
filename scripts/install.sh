#!/usr/bin/env bash
# Creates .venv and installs Lusifer with the local model stack and the test tools.
# llama-cpp-python compiles from source (about 7-10 minutes on 2 cores) the first time;
# pip keeps the built wheel in its cache, so later installs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml .ci/constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[local,dev]" -c .ci/constraints.txt
    rm -f .venv/.installed-* && touch "$stamp"
fi
