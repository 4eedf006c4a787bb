"""One coordinator per run: the second command on a run id is refused, naming the first."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coordinator.run_lock import hold_run, lock_key
from lusifer.core.errors import ConfigurationError
from lusifer.store.engines import get_engine
from tests.integration.services import postgres_schema


def test_lock_keys_are_stable_non_negative_and_distinct() -> None:
    assert lock_key("a") == lock_key("a")
    assert lock_key("a") != lock_key("b")
    assert 0 <= lock_key("x[/]y") < 2**63


def test_sqlite_a_second_holder_is_refused_and_told_who_holds_it(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    with hold_run(engine, "r1"):
        with pytest.raises(ConfigurationError) as refused, hold_run(engine, "r1"):
            pass
        assert "already being coordinated" in str(refused.value)
        assert "lusifer coordinator pid" in str(refused.value)
        with hold_run(engine, "r2"):  # another run is not held
            pass
    with hold_run(engine, "r1"):  # released at the end of the block
        pass


def test_sqlite_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    database = tmp_path / "runs.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from coordinator.run_lock import hold_run
        from lusifer.store.engines import get_engine
        with hold_run(get_engine("sqlite:///{database}"), "r1"):
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    with hold_run(get_engine(f"sqlite:///{database}"), "r1"):
        pass


@pytest.mark.integration
def test_postgres_a_second_holder_is_refused_and_told_who_holds_it() -> None:
    with postgres_schema() as url:
        engine = get_engine(url)
        with hold_run(engine, "r1"):
            with pytest.raises(ConfigurationError) as refused, hold_run(engine, "r1"):
                pass
            assert "lusifer coordinator pid" in str(refused.value)
            with hold_run(engine, "r2"):
                pass
        with hold_run(engine, "r1"):
            pass
