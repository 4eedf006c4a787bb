#!/usr/bin/env bash
# Creates .venv and installs Lusifer with the local model stack and the test tools.
# llama-cpp-python compiles from source the first time (text-only, in the background while pip
# installs the rest: see the README for the time), into a wheel folder under
# ~/.cache/lusifer-wheels, so later installs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The llama-cpp-python compile runs in a session of its own (setsid), so that an install that
# fails or is interrupted stops the whole compiler tree with it, and within a bound (timeout).
build_pid=""
build_dir=""
stop_llama_build() {
    if [ -n "$build_pid" ]; then kill -- -"$build_pid" 2>/dev/null || true; fi
    if [ -n "$build_dir" ]; then rm -rf "$build_dir"; fi
}
trap stop_llama_build EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
build_llama_in_background() {  # requirement, wheel folder, CMAKE_ARGS
    mkdir -p "$2"
    build_dir=$(mktemp -d "$2/.building-XXXXXX")
    echo "compiling llama-cpp-python in the background (log: $build_dir/build.log)"
    # CMake runs this file right after llama.cpp's project(): a plain variable there outranks
    # the cached LLAMA_BUILD_COMMON=ON that llama-cpp-python forces, so common is not built.
    echo 'set(LLAMA_BUILD_COMMON OFF)' >"$build_dir/no-common.cmake"
    CMAKE_ARGS="$3 '-DCMAKE_PROJECT_llama.cpp_INCLUDE=$build_dir/no-common.cmake'" \
        setsid timeout 3600 .venv/bin/python -m pip wheel -v --no-deps \
        --no-cache-dir -w "$build_dir" "$1" >"$build_dir/build.log" 2>&1 &
    build_pid=$!
}
wait_for_llama_build() {  # wheel folder
    while [ -t 1 ] && kill -0 "$build_pid" 2>/dev/null; do
        step=$(grep -oE '^ *\[[0-9]+/[0-9]+\]' "$build_dir/build.log" | tail -n 1 | tr -d ' ' || true)
        printf '\r  compiling llama-cpp-python %s ' "${step:-(configuring)}"
        sleep 2
    done
    [ -t 1 ] && printf '\n'
    rc=0
    wait "$build_pid" || rc=$?
    build_pid=""
    if [ "$rc" != 0 ]; then
        [ "$rc" = 124 ] && echo "llama-cpp-python did not compile within 60 min" >&2
        echo "llama-cpp-python did not build (exit $rc); the end of its log:" >&2
        tail -n 25 "$build_dir/build.log" >&2
        exit 1
    fi
    # One rename into the folder: a concurrent install never sees a half-written wheel.
    mv "$build_dir"/llama_cpp_python-*.whl "$1"/
    rm -rf "$build_dir"
    build_dir=""
}
stamp=".venv/.installed-$(cat pyproject.toml .ci/constraints.txt scripts/install.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "installing Lusifer into .venv"
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
    # A text-only build: libllama and ggml, which is all that the llama_cpp bindings and its
    # server load for a text model. Left out: libmtmd (images and audio, LLAVA_BUILD) and
    # llama.cpp's common library, which the bindings never load but its CMake file forces
    # on; together more than half of the objects compiled. Wheels built with other options
    # live in another folder, so a cache made before this rule is not taken for this build.
    wheels="${LUSIFER_WHEEL_DIR:-$HOME/.cache/lusifer-wheels}/portable-avx2-text"
    if ! ls "$wheels"/llama_cpp_python-"${llama#*==}"-*.whl >/dev/null 2>&1; then
        build_llama_in_background "$llama" "$wheels" \
            "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF"
        # Everything but the local model stack installs while the compiler runs.
        .venv/bin/python -m pip install --quiet -e ".[dev]" -c .ci/constraints.txt \
            2> >(grep -v "$noise" >&2)
        wait_for_llama_build "$wheels"
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
