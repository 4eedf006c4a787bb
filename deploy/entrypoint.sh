#!/usr/bin/env bash
# Entrypoint of the Lusifer image: wait for the broker and the database, then become the
# role's command (so that it receives SIGTERM itself and can finish its job):
#   lusifer init-db | lusifer worker | celery -A workers.app flower ... | lusifer run ...
# LUSIFER_SKIP_WAIT=1 skips the wait; LUSIFER_WAIT_TIMEOUT sets it (seconds, default 60).
# `lusifer worker` runs LUSIFER_WORKER_CONCURRENCY threads (default 80: LLM calls in flight).
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "entrypoint: no command given (e.g. lusifer worker, lusifer init-db, lusifer run)" >&2
  exit 2
fi

if [[ "${LUSIFER_SKIP_WAIT:-0}" != "1" ]]; then
  python "$(dirname "$0")/wait_for.py" --timeout "${LUSIFER_WAIT_TIMEOUT:-60}"
fi

exec "$@"
