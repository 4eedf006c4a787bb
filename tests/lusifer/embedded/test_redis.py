"""The embedded Redis of one command: a child on a unix socket that dies with its parent."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from lusifer.embedded.redis import clean_stale_sockets, embedded_redis

pytestmark = pytest.mark.integration


def _redis_servers(work_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    root = str(work_dir.resolve())
    return [line for line in out.splitlines() if "redis-server" in line and root in line]


def test_serves_on_a_socket_and_stops_at_the_end(tmp_path: Path) -> None:
    with embedded_redis(tmp_path) as url:
        sock = url.removeprefix("redis+socket://")
        with redis.Redis(unix_socket_path=sock) as client:
            assert client.ping()
        assert len(_redis_servers(tmp_path)) == 1
    assert _redis_servers(tmp_path) == []
    assert not Path(sock).exists()


_HOLD = """
import sys, time
from pathlib import Path
from lusifer.embedded.redis import embedded_redis
with embedded_redis(Path(sys.argv[1])) as url:
    print(url, flush=True)
    time.sleep(300)
"""


def test_a_sigkilled_command_takes_its_broker_with_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[3],
    )
    assert holder.stdout is not None
    url = holder.stdout.readline().strip()
    assert url.startswith("redis+socket://")
    assert len(_redis_servers(tmp_path)) == 1
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    deadline = time.monotonic() + 10
    while _redis_servers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _redis_servers(tmp_path) == []
    # The socket file it left is removed by the next command.
    clean_stale_sockets(tmp_path)
    assert not Path(url.removeprefix("redis+socket://")).exists()
