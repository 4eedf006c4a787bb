"""A run no worker serves says so, then stops with exit 6, resumable; it does not wait
silently behind "0 failed"."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
import redis

from lusifer.core.errors import ExitCode
from lusifer.store.engines import create_tables, get_engine
from tests.integration.services import (
    postgres_schema,
    run_cli,
    service_env,
    stub_run_args,
    stub_server,
)

pytestmark = pytest.mark.integration


def test_a_run_without_workers_says_why_then_stops(data_dir: Path, tmp_path: Path) -> None:
    queue = f"unserved-{secrets.token_hex(4)}"
    run_id = f"stall-{secrets.token_hex(3)}"
    with postgres_schema("lusifer_stall") as url, stub_server() as stub:
        create_tables(get_engine(url))
        env = service_env(url, queue, None, LUSIFER_STALL_WARN_S="2", LUSIFER_STALL_GIVE_UP_S="6")
        started = time.monotonic()
        result = run_cli(
            stub_run_args(stub.base_url, data_dir, run_id, "--folds", "u1", "--users", "2"),
            env,
            tmp_path,
            timeout=120,
        )
        elapsed = time.monotonic() - started
        assert stub.chat_count() == 0
        # The messages nobody took stay in the shared broker otherwise.
        redis.Redis.from_url(env["LUSIFER_BROKER_URL"]).delete(queue)
    assert result.returncode == ExitCode.STALLED, result.stdout + result.stderr
    assert f"no worker consumes queue '{queue}'" in result.stdout, result.stdout
    assert "lusifer resume" in result.stderr and "Traceback" not in result.stderr
    assert elapsed < 60
