#!/usr/bin/env bash
# The main job on the embedded defaults: embedded Redis and PostgreSQL, local Celery workers
# and a local SmolLM2-135M server; MovieLens 100K fold u1 for three users. No key, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ -z "${LUSIFER_DATA_DIR:-}" ] && [ -d ../shared/data/ml-100k ]; then
    export LUSIFER_DATA_DIR="$(cd ../shared/data && pwd)"
fi
exec .venv/bin/lusifer run --folds u1 --users 2,3,4 --overview-chars 200 "$@"
