"""The Prometheus collector: figures from the database and the broker, read on scrape.

A scrape reads at most once per ``min_interval_s`` (Prometheus servers in a pair, Grafana's
refresh and a curl share one read). A source that fails or times out is reported as
``lusifer_source_up{source=...} 0`` with its figures left out, never as old numbers and
never as an HTTP error that hides the other source.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from coordinator.metrics.broker import BrokerReader, QueueFigures
from coordinator.metrics.figures import LATENCY_BUCKETS, FigureCache, RunFigures
from lusifer.store.tables import JobState

log = logging.getLogger("lusifer.metrics")
UNFINISHED = (JobState.PENDING, JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class Snapshot:
    """One read of both sources; a None source could not be read (see ``errors``)."""

    runs: list[RunFigures] | None
    queues: QueueFigures | None
    seconds: dict[str, float]
    errors: dict[str, str]

    def active_jobs(self) -> dict[str, int]:
        """Jobs of open runs by state (queued and running are what workers are needed for)."""
        totals: dict[str, int] = {str(state): 0 for state in UNFINISHED}
        for run in self.runs or []:
            if run.ended:
                continue
            for (_, _, state), n in run.jobs.items():
                if state in totals:
                    totals[state] += n
        return totals


class LusiferCollector(Collector):
    """Yields Lusifer's metric families from a fresh (or ``min_interval_s`` old) snapshot."""

    def __init__(
        self,
        engine: Engine,
        broker: BrokerReader | None,
        *,
        window: timedelta,
        max_runs: int,
        timeout_s: float,
        min_interval_s: float,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.window = window
        self.max_runs = max_runs
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self._cache = FigureCache()
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._taken_at = 0.0

    def snapshot(self) -> Snapshot:
        """The latest snapshot, read again when older than ``min_interval_s``."""
        with self._lock:  # concurrent scrapes wait for one read instead of each making one
            if self._snapshot is None or time.monotonic() - self._taken_at >= self.min_interval_s:
                self._snapshot = self._read()
                self._taken_at = time.monotonic()
            return self._snapshot

    def _read(self) -> Snapshot:
        seconds: dict[str, float] = {}
        errors: dict[str, str] = {}
        runs: list[RunFigures] | None = None
        queues: QueueFigures | None = None
        start = time.perf_counter()
        try:
            runs = self._cache.read(self.engine, self.window, self.max_runs, self.timeout_s)
        except Exception as err:  # any database failure: reported as the source being down
            errors["database"] = _first_line(err)
            log.warning("metrics: database not read: %s", errors["database"])
        seconds["database"] = time.perf_counter() - start
        if self.broker is not None:
            start = time.perf_counter()
            try:
                queues = self.broker.read()
            except Exception as err:  # redis errors, timeouts
                errors["broker"] = _first_line(err)
                log.warning("metrics: broker not read: %s", errors["broker"])
            seconds["broker"] = time.perf_counter() - start
        return Snapshot(runs, queues, seconds, errors)

    def collect(self) -> Iterator[Metric]:
        """The metric families Prometheus asks for."""
        snap = self.snapshot()
        up = GaugeMetricFamily(
            "lusifer_source_up", "1 when the source was read at this scrape", labels=["source"]
        )
        took = GaugeMetricFamily(
            "lusifer_source_read_seconds", "Time the last read of a source took", labels=["source"]
        )
        for source, seconds in snap.seconds.items():
            up.add_metric([source], 0.0 if source in snap.errors else 1.0)
            took.add_metric([source], seconds)
        yield up
        yield took
        if snap.runs is not None:
            yield from run_families(snap.runs)
            active = GaugeMetricFamily(
                "lusifer_active_jobs",
                "Jobs of runs not ended, by state, over all runs (what workers are needed for)",
                labels=["state"],
            )
            for state, n in snap.active_jobs().items():
                active.add_metric([state], n)
            yield active
        if snap.queues is not None:
            yield from queue_families(snap.queues)


def run_families(runs: list[RunFigures]) -> Iterator[Metric]:
    """The per-run and per-fold families."""
    info = GaugeMetricFamily(
        "lusifer_run_info", "A watched run and its status", labels=["run", "status"]
    )
    progress = GaugeMetricFamily(
        "lusifer_run_last_progress_timestamp_seconds",
        "Newest change of any job of the run (finish, claim or heartbeat), Unix time",
        labels=["run"],
    )
    spent = GaugeMetricFamily("lusifer_run_spent_usd", "The run's recorded spend", labels=["run"])
    jobs = GaugeMetricFamily(
        "lusifer_jobs", "Jobs by state", labels=["run", "fold", "kind", "state"]
    )
    attempts = CounterMetricFamily(
        "lusifer_job_attempts", "Times jobs were handed out", labels=["run", "fold", "kind"]
    )
    reasks = CounterMetricFamily(
        "lusifer_reasks", "Re-asks for missing or invalid answers", labels=["run", "fold", "kind"]
    )
    planned = GaugeMetricFamily(
        "lusifer_ratings_planned", "Test ratings to simulate", labels=["run", "fold"]
    )
    stored = GaugeMetricFamily(
        "lusifer_ratings_stored", "Simulated ratings stored", labels=["run", "fold"]
    )
    calls = CounterMetricFamily(
        "lusifer_llm_calls", "LLM call uses: api (paid) or cache", labels=["run", "fold", "source"]
    )
    retries = CounterMetricFamily(
        "lusifer_llm_retries", "In-call retries of transient errors", labels=["run", "fold"]
    )
    tokens = CounterMetricFamily(
        "lusifer_llm_tokens", "Tokens of paid calls", labels=["run", "fold", "type"]
    )
    cost = CounterMetricFamily("lusifer_llm_cost_usd", "Cost of paid calls", labels=["run", "fold"])
    latency = HistogramMetricFamily(
        "lusifer_llm_call_latency_seconds", "Latency of paid calls", labels=["run", "fold"]
    )
    for run in runs:
        rid = run.run_id
        info.add_metric([rid, run.status], 1.0)
        spent.add_metric([rid], run.spent_usd)
        if run.last_progress_s is not None:
            progress.add_metric([rid], run.last_progress_s)
        for (fold, kind, state), n in sorted(run.jobs.items()):
            jobs.add_metric([rid, fold, kind, state], n)
        for (fold, kind), n in sorted(run.attempts.items()):
            attempts.add_metric([rid, fold, kind], n)
        for (fold, kind), n in sorted(run.reasks.items()):
            reasks.add_metric([rid, fold, kind], n)
        for fold, n in sorted(run.ratings_planned.items()):
            planned.add_metric([rid, fold], n)
            stored.add_metric([rid, fold], run.ratings_stored.get(fold, 0))
        for fold, c in sorted(run.calls.items()):
            calls.add_metric([rid, fold, "api"], c.api_calls)
            calls.add_metric([rid, fold, "cache"], c.cached_calls)
            retries.add_metric([rid, fold], c.retries)
            tokens.add_metric([rid, fold, "prompt"], c.prompt_tokens)
            tokens.add_metric([rid, fold, "completion"], c.completion_tokens)
            tokens.add_metric([rid, fold, "cached_prompt"], c.cached_prompt_tokens)
            cost.add_metric([rid, fold], c.cost_usd)
            buckets = [
                (_bound(b), float(n)) for b, n in zip(LATENCY_BUCKETS, c.latency_le, strict=True)
            ]
            buckets.append(("+Inf", float(c.api_calls)))
            latency.add_metric([rid, fold], buckets, c.latency_sum_s)
    yield from (info, progress, spent, jobs, attempts, reasks, planned, stored)
    yield from (calls, retries, tokens, cost, latency)


def queue_families(queues: QueueFigures) -> Iterator[Metric]:
    """The broker's families."""
    waiting = GaugeMetricFamily(
        "lusifer_queue_messages", "Messages waiting in the job queue", labels=["queue"]
    )
    for queue, n in queues.waiting.items():
        waiting.add_metric([queue], n)
    yield waiting
    yield GaugeMetricFamily(
        "lusifer_broker_unacked_messages",
        "Messages delivered to workers and not acknowledged yet (running or prefetched jobs)",
        value=queues.unacked,
    )


def _bound(value: float) -> str:
    # The spelling prometheus_client gives its own histograms' bounds ("5.0", "0.25").
    return repr(float(value))


def _first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    lines = str(orig).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__
