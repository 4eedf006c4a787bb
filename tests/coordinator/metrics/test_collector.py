"""The collector over a SQLite database holding hand-made rows: each figure against the
hand-counted value, ended runs read once, and the exposition Prometheus parses."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, create_engine, update
from sqlmodel import Session

from coordinator.metrics.broker import QueueFigures
from coordinator.metrics.collector import LusiferCollector
from coordinator.metrics.server import scale_figures
from lusifer.store.tables import Job, Run
from tests.coordinator.metrics.sample_db import NOW, sample_database
from tests.integration.metrics_server import Scrape, parse


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return sample_database(tmp_path / "m.db")


def _collector(engine: Engine) -> LusiferCollector:
    return LusiferCollector(
        engine, None, window=timedelta(hours=24), max_runs=10, timeout_s=5.0, min_interval_s=0.0
    )


def scrape(collector: LusiferCollector) -> Scrape:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return parse(generate_latest(registry).decode())


def test_each_figure_is_the_hand_counted_one(engine: Engine) -> None:
    s = scrape(_collector(engine))
    assert s.value("lusifer_source_up", source="database") == 1
    assert s.value("lusifer_source_up", source="broker") is None  # none configured
    # Runs of the window only: "old" ended three days ago.
    assert set(s.series("lusifer_run_info")) == {
        (("run", "open"), ("status", "running")),
        (("run", "ended"), ("status", "done")),
    }
    jobs = {
        (d["kind"], d["fold"], d["run"], d["state"]): n
        for ls, n in s.series("lusifer_jobs").items()
        for d in [dict(ls)]
    }
    assert jobs[("profile", "u1", "open", "done")] == 1
    assert jobs[("profile", "u1", "open", "running")] == 1
    assert jobs[("rating", "u1", "open", "queued")] == 1
    assert jobs[("profile", "u2", "open", "failed")] == 1
    assert s.value("lusifer_job_attempts_total", run="open", fold="u1", kind="profile") == 3
    assert s.value("lusifer_reasks_total", run="open", fold="u2", kind="profile") == 2
    assert s.value("lusifer_ratings_planned", run="open", fold="u1") == 3
    assert s.value("lusifer_ratings_stored", run="open", fold="u1") == 2
    labels = {"run": "open", "fold": "u1"}
    assert s.value("lusifer_llm_calls_total", **labels, source="api") == 2
    assert s.value("lusifer_llm_calls_total", **labels, source="cache") == 1
    assert s.value("lusifer_llm_retries_total", **labels) == 2
    assert s.value("lusifer_llm_tokens_total", **labels, type="prompt") == 300
    assert s.value("lusifer_llm_tokens_total", **labels, type="completion") == 30
    assert s.value("lusifer_llm_tokens_total", **labels, type="cached_prompt") == 150
    assert s.value("lusifer_llm_cost_usd_total", **labels) == pytest.approx(0.03)
    assert s.value("lusifer_run_spent_usd", run="open") == 0.5
    name = "lusifer_llm_call_latency_seconds"
    assert s.value(f"{name}_bucket", **labels, le="0.1") == 0
    assert s.value(f"{name}_bucket", **labels, le="0.25") == 1
    assert s.value(f"{name}_bucket", **labels, le="2.5") == 1
    assert s.value(f"{name}_bucket", **labels, le="5.0") == 2
    assert s.value(f"{name}_bucket", **labels, le="+Inf") == 2
    assert s.value(f"{name}_count", **labels) == 2
    assert s.value(f"{name}_sum", **labels) == pytest.approx(3.2)
    # The ended run's one call came from the API for it: its own figures.
    assert s.value("lusifer_llm_calls_total", run="ended", fold="u1", source="api") == 1
    assert s.value("lusifer_active_jobs", state="running") == 1
    assert s.value("lusifer_active_jobs", state="queued") == 1
    assert s.value("lusifer_run_last_progress_timestamp_seconds", run="open") == pytest.approx(
        NOW.timestamp(), abs=1
    )


def test_ended_runs_are_read_once_and_open_ones_every_time(engine: Engine) -> None:
    collector = _collector(engine)
    scrape(collector)
    with Session(engine) as s:
        s.exec(update(Job).where(Job.run_id == "ended").values(state="failed"))  # type: ignore[call-overload]
        s.exec(update(Job).where(Job.run_id == "open").values(state="done"))  # type: ignore[call-overload]
        s.commit()
    again = scrape(collector)
    assert again.total("lusifer_jobs", run="ended", state="done") == 1  # final: not re-read
    assert again.total("lusifer_jobs", run="open", state="done") == 4
    # Resumed: open again, so read again.
    with Session(engine) as s:
        s.exec(update(Run).where(Run.id == "ended").values(status="running"))  # type: ignore[call-overload]
        s.commit()
    assert scrape(collector).total("lusifer_jobs", run="ended", state="failed") == 1


def test_scrapes_within_min_interval_share_one_read(engine: Engine) -> None:
    collector = LusiferCollector(
        engine, None, window=timedelta(hours=24), max_runs=10, timeout_s=5.0, min_interval_s=60.0
    )
    first = collector.snapshot()
    assert collector.snapshot() is first


def test_a_database_that_fails_is_reported_not_raised(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables at all
    collector = _collector(engine)
    s = scrape(collector)
    assert s.value("lusifer_source_up", source="database") == 0
    assert not s.series("lusifer_jobs")
    with pytest.raises(LookupError, match="no such table"):
        scale_figures(collector)


class EmptyQueue:
    """A broker whose queue is empty while workers hold one message (unit tests only)."""

    def read(self) -> QueueFigures:
        return QueueFigures({"lusifer": 0}, unacked=1)


def test_scale_counts_running_jobs_not_only_queued_messages(engine: Engine) -> None:
    collector = LusiferCollector(
        engine,
        EmptyQueue(),  # type: ignore[arg-type]
        window=timedelta(hours=24),
        max_runs=10,
        timeout_s=5.0,
        min_interval_s=0.0,
    )
    figures = scale_figures(collector)
    # The queue is empty, yet a job runs and one is queued: two jobs need workers.
    assert figures == {
        "queued_jobs": 1,
        "running_jobs": 1,
        "pending_jobs": 0,
        "active_jobs": 2,
        "queued_messages": 0,
    }
    s = scrape(collector)
    assert s.value("lusifer_queue_messages", queue="lusifer") == 0
    assert s.value("lusifer_broker_unacked_messages") == 1
    assert s.value("lusifer_source_up", source="broker") == 1
