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
    echo "installing Lusifer into .venv (the first time compiles llama-cpp-python: ~10 min)"
    # Some machines' pip configuration names index folders that do not exist; pip warns once
    # per package about them, which says nothing about this install.
    noise='is ignored: it is neither a file nor a directory'
    .venv/bin/python -m pip install --quiet --upgrade pip 2> >(grep -v "$noise" >&2)
    .venv/bin/python -m pip install --quiet -e ".[local,dev]" -c .ci/constraints.txt \
        2> >(grep -v "$noise" >&2)
    rm -f .venv/.installed-* && touch "$stamp"
fi
# Headless Chromium opens the HTML report in a test. Installed where this is root on Debian;
# elsewhere that one test skips and says why.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the report test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
        >/dev/null) || echo "chromium could not be installed; the report screenshot test will skip"
fi
