#!/usr/bin/env bash
# The whole test suite: lint, types, import contracts, then unit, integration (real Redis,
# PostgreSQL, Celery workers, stub LLM server) and end-to-end (real local model) tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ -z "${LUSIFER_DATA_DIR:-}" ] && [ -d ../shared/data/ml-100k ]; then
    export LUSIFER_DATA_DIR="$(cd ../shared/data && pwd)"
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
# pytest exits 5 when it collected no test; under `set -e` that fails the run as it should.
.venv/bin/python -m pytest -p no:cacheprovider "$@"
