"""`from lusifer import Lusifer` against the stub server over HTTP: in cluster mode (real Redis,
PostgreSQL and Celery worker processes) and in local mode (embedded Redis, local workers)."""

from __future__ import annotations

import io
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from sqlalchemy import inspect
from sqlmodel import Session, func, select

import lusifer
from lusifer import Lusifer
from lusifer.core.errors import DataError
from lusifer.store.engines import get_engine
from lusifer.store.tables import Run
from tests.integration.services import (
    Stub,
    celery_workers,
    postgres_schema,
    run_cli,
    service_env,
    stub_server,
)

pytestmark = pytest.mark.integration

COLUMNS = {"user_id": "uid", "item_id": "movie", "rating": "stars", "timestamp": "when"}
COLUMNS |= {"title": "name", "genres": "kinds", "age": "age", "gender": "sex"}


def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Three users who rated twelve of thirty films; three more films each to test."""
    users = pd.DataFrame({"uid": [1, 2, 3], "age": [24, 53, 31], "sex": ["M", "F", "F"]})
    items = pd.DataFrame(
        {
            "movie": range(1, 31),
            "name": [f"Film {i} ({1970 + i})" for i in range(1, 31)],
            "kinds": ["Drama|Comedy" if i % 2 else "Horror" for i in range(1, 31)],
        }
    )
    history = [(u, i, 1 + (u + i) % 5, 1000 + i) for u in (1, 2, 3) for i in range(u, u + 12)]
    ratings = pd.DataFrame(history, columns=["uid", "movie", "stars", "when"])
    tests = [(u, i, 1 + (u * i) % 5) for u in (1, 2, 3) for i in (20, 21, 22)]
    test = pd.DataFrame(tests, columns=["uid", "movie", "stars"])
    return users, items, ratings, test


def make(stub: Stub, **kwargs: object) -> Lusifer:
    users, items, ratings, _ = frames()
    return Lusifer(
        users,
        items,
        ratings,
        columns=COLUMNS,
        base_url=stub.base_url,
        model="stub-model",
        console=Console(file=io.StringIO(), width=120),
        **kwargs,  # type: ignore[arg-type]
    )


@dataclass
class Cluster:
    stub: Stub
    env: dict[str, str]
    database_url: str


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    with postgres_schema("lusifer_api") as url, stub_server() as stub:
        env = service_env(url, f"api-{secrets.token_hex(4)}", None)
        for name in [n for n in list(os.environ) if n.startswith("LUSIFER_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            if name.startswith("LUSIFER_"):
                monkeypatch.setenv(name, value)
        with celery_workers(env, tmp_path, count=1, threads=8):
            yield Cluster(stub, env, url)


def _runs(database_url: str) -> int:
    engine = get_engine(database_url)
    if not inspect(engine).has_table("run"):
        return 0
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(Run)).one())


def test_every_method_in_cluster_mode(cluster: Cluster, tmp_path: Path) -> None:
    stub = cluster.stub
    lf = make(stub)
    _, _, _, test = frames()

    profiles = lf.build_profiles([1, 2])
    assert profiles["user_id"].tolist() == [1, 2]
    assert profiles["profile"].str.len().min() > 0
    # Twelve ratings in batches of ten: a first profile and one update, each explained.
    assert profiles["steps"].tolist() == [2, 2]
    assert [len(h) for h in profiles["profile_history"]] == [2, 2]
    assert all(step["explanation"] for h in profiles["profile_history"] for step in h)
    after_profiles = stub.chat_count()

    rated = lf.rate(test)
    assert rated[["uid", "movie", "stars"]].equals(test)
    assert rated["simulated_rating"].between(1, 5).all()
    assert rated["reason"].isna().all()
    # Users 1 and 2 were profiled already: only user 3's profile and the ratings are new.
    assert stub.chat_count() - after_profiles == 2 + 3
    run_id = rated.attrs["run_id"]

    before = stub.chat_count()
    again = lf.rate(test)
    assert stub.chat_count() == before  # zero new LLM calls
    assert again.attrs["run_id"] == run_id
    pd.testing.assert_frame_equal(again, rated)

    metrics = lf.evaluate()
    scored = lf.score(rated)
    assert metrics["fold"].tolist() == ["api"] and metrics["n"].tolist() == [9]
    assert metrics["rmse"].iloc[0] == pytest.approx(scored["rmse"].iloc[0], abs=1e-12)
    report = run_cli(["report", run_id], cluster.env, tmp_path)
    assert report.returncode == 0, report.stderr
    assert f"{metrics['rmse'].iloc[0]:.3f}" in report.stdout

    stored = lusifer.results(run_id)
    assert len(stored.ratings) == 9 and stored.ratings["simulated_rating"].notna().all()
    assert set(stored.profiles["user_id"]) == {1, 2, 3}
    assert stored.calls["job_id"].str.startswith(run_id).all()

    out = tmp_path / "run.sqlite"
    exported = run_cli(
        ["export", run_id, "--format", "sqlite", "--output", str(out)], cluster.env, tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT count(*) FROM ratings").fetchone() == (9,)
    missing = run_cli(["export", "nope", "--format", "csv"], cluster.env, tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "run 'nope' is not in" in missing.stderr and "lusifer runs" in missing.stderr

    # The RL loop: the user rates recommendations and the profile moves with each step.
    first = lf.simulate_rating(1, [25, 26])
    assert first["item_id"].tolist() == [25, 26]
    assert first["simulated_rating"].between(1, 5).all()
    lf.simulate_rating(1, pd.DataFrame({"movie": [27]}))
    history = lf.profile_history(1)
    assert history["source"].tolist() == ["run", "update", "update"]
    assert lf.profile(1) == history["profile"].iloc[-1]


def test_bad_frames_store_nothing(cluster: Cluster) -> None:
    lf = make(cluster.stub)
    for bad, expected in [
        (pd.DataFrame({"uid": [9], "movie": [20]}), "holds user ids not in users_df"),
        (pd.DataFrame({"uid": [1, 1], "movie": [20, 20]}), "appears twice"),
        (pd.DataFrame({"uid": [1.5], "movie": [20]}), "column 'uid'"),
        (pd.DataFrame({"movie": [20]}), "lacks column(s) uid"),
    ]:
        with pytest.raises(DataError, match="test_df") as info:
            lf.rate(bad)
        assert expected in str(info.value)
    users, items, ratings, _ = frames()
    with pytest.raises(DataError, match=r"ratings_df row 0 column 'stars': rating 9"):
        Lusifer(users, items, ratings.assign(stars=[9] + [3] * 35), columns=COLUMNS)
    assert cluster.stub.chat_count() == 0
    assert _runs(cluster.database_url) == 0


def test_local_mode_reruns_make_no_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in list(os.environ) if n.startswith("LUSIFER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LUSIFER_WORK_DIR", str(tmp_path / "work"))
    _, _, _, test = frames()
    with stub_server() as stub, make(stub) as lf:
        rated = lf.rate(test)
        assert rated["simulated_rating"].notna().all()
        calls = stub.chat_count()
        assert calls == 3 * 2 + 3  # two profile steps and one rating call per user
        again = lf.rate(test)
        assert stub.chat_count() == calls
        pd.testing.assert_frame_equal(again, rated)
    # A new object on the same work directory finds the run in the database.
    with stub_server() as stub:
        third = make(stub).rate(test)
        assert stub.chat_count() == 0
    assert third["simulated_rating"].tolist() == rated["simulated_rating"].tolist()


INTERRUPTED = """
import io, sys
from rich.console import Console
from lusifer import Lusifer
from tests.integration.test_python_api import COLUMNS, frames
users, items, ratings, test = frames()
lf = Lusifer(users, items, ratings, columns=COLUMNS, base_url=sys.argv[1], model="stub-model",
             chunk_size=1, threads=1)
lf.rate(test)
"""


def test_an_interrupted_rate_resumes(cluster: Cluster) -> None:
    stub = cluster.stub
    stub.configure(latency_s=1.0)
    _, _, _, test = frames()
    root = Path(__file__).parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, stub.base_url], cwd=root, env={**os.environ}
    )
    deadline = time.monotonic() + 120
    while stub.chat_count() < 4 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.1)
    child.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the run
    assert child.wait(60) != 0
    out = io.StringIO()
    lf = make(stub, chunk_size=1, threads=1)
    lf.console = Console(file=out, width=120)
    rated = lf.rate(test)
    assert "resuming run" in out.getvalue()
    assert rated["simulated_rating"].notna().all()
    # Calls that succeeded before the interrupt come from the cache: 6 profile steps and 9
    # ratings are asked once each.
    assert stub.chat_count() == 6 + 9
    lf.rate(test)
    assert stub.chat_count() == 6 + 9
