#!/usr/bin/env bash
# Creates .venv and installs Lusifer with the local model stack and the test tools.
# llama-cpp-python compiles from source (about 6 minutes on 2 cores) the first time, into a
# wheel folder under ~/.cache/lusifer-wheels, so later installs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml .ci/constraints.txt scripts/install.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "installing Lusifer into .venv (the first time compiles llama-cpp-python: ~6 min)"
    # Some machines' pip configuration names index folders that do not exist; pip warns once
    # per package about them, which says nothing about this install.
    noise='is ignored: it is neither a file nor a directory'
    .venv/bin/python -m pip install --quiet --upgrade pip 2> >(grep -v "$noise" >&2)
    # llama-cpp-python compiles ggml for the building CPU by default (GGML_NATIVE). On CPUs
    # with AMX that build segfaults on its first prompt of more than one token, so the local
    # model server died on every call. A portable AVX2 build runs on every x86-64 machine of
    # the last decade; it is built once into a wheel folder of its own (pip's wheel cache
    # would hand back a native build made earlier under the same name).
    llama=$(grep -E '^llama-cpp-python==' .ci/constraints.txt)
    wheels="${LUSIFER_WHEEL_DIR:-$HOME/.cache/lusifer-wheels}/portable-avx2"
    if ! ls "$wheels"/llama_cpp_python-"${llama#*==}"-*.whl >/dev/null 2>&1; then
        CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
            .venv/bin/python -m pip wheel --quiet --no-deps --no-cache-dir -w "$wheels" "$llama" \
            2> >(grep -v "$noise" >&2)
    fi
    .venv/bin/python -m pip install --quiet -e ".[local,dev,rl]" -c .ci/constraints.txt \
        --find-links "$wheels" 2> >(grep -v "$noise" >&2)
    # A .venv made before this rule holds the native build: replace it.
    .venv/bin/python -m pip install --quiet --force-reinstall --no-deps \
        "$wheels"/llama_cpp_python-"${llama#*==}"-*.whl 2> >(grep -v "$noise" >&2)
    rm -f .venv/.installed-* && touch "$stamp"
fi
# Headless Chromium opens the HTML report in a test. Installed where this is root on Debian;
# elsewhere that one test skips and says why.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the report test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
        >/dev/null) || echo "chromium could not be installed; the report screenshot test will skip"
fi
# promtool checks and unit-tests the Prometheus alert rules (tests/deploy/test_monitoring.py);
# Debian ships it in its prometheus package (only promtool is used; no server is run).
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's prometheus for promtool"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends prometheus >/dev/null) \
        || echo "prometheus could not be installed; the alert rule tests will skip"
fi
