"""The figures of the runs worth watching, read from the database in a few grouped queries.

Each read is one transaction with a statement timeout on PostgreSQL, so a slow database makes
a scrape fail fast instead of piling scrapes up. A run that has ended cannot change any more:
its figures are read once and kept (``FigureCache``), so a scrape costs the open runs only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, case, func, or_, select, text
from sqlmodel import col

from lusifer.store.tables import CallUse, Job, LLMCall, Run, RunStatus, SimulatedRating

# Upper bounds (seconds) of the call latency histogram: from a fast local server to the
# default 120 s call timeout.
LATENCY_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
FoldKey = tuple[str, str]  # (run id, fold)


@dataclass
class CallFigures:
    """LLM call uses of one (run, fold): fresh calls paid for, and answers from the cache."""

    api_calls: int = 0
    cached_calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cost_usd: float = 0.0
    latency_sum_s: float = 0.0
    # Cumulative counts per bound of LATENCY_BUCKETS (fresh calls only).
    latency_le: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))


@dataclass
class RunFigures:
    """Everything the endpoint says about one run."""

    run_id: str
    status: str
    # (fold, kind, state) -> jobs
    jobs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (fold, kind) -> attempts summed, and re-asks summed
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    reasks: dict[tuple[str, str], int] = field(default_factory=dict)
    ratings_planned: dict[str, int] = field(default_factory=dict)
    ratings_stored: dict[str, int] = field(default_factory=dict)
    calls: dict[str, CallFigures] = field(default_factory=dict)
    spent_usd: float = 0.0
    # Newest change of any job (a finish, a claim, a running job's heartbeat), as Unix time.
    last_progress_s: float | None = None

    @property
    def ended(self) -> bool:
        """The run is done or failed: its figures are final."""
        return self.status in RunStatus.ENDED


def watched_runs(
    conn: Connection, window: timedelta, max_runs: int, now: datetime | None = None
) -> list[tuple[str, str]]:
    """Ids and statuses of the runs not ended, and of those that ended within ``window``."""
    since = (now or datetime.now(UTC)) - window
    rows = conn.execute(
        select(col(Run.id), col(Run.status))
        .where(
            or_(
                col(Run.status).not_in(list(RunStatus.ENDED)),
                func.coalesce(col(Run.finished_at), col(Run.created_at)) >= since,
            )
        )
        .order_by(col(Run.created_at).desc())
        .limit(max_runs)
    ).all()
    return [(str(r[0]), str(r[1])) for r in rows]


def limit_statement_time(conn: Connection, timeout_s: float) -> None:
    """Cap every statement of this transaction (PostgreSQL; SQLite has no such setting)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}"))


def read_runs(conn: Connection, runs: Sequence[tuple[str, str]]) -> dict[str, RunFigures]:
    """The figures of ``runs`` (id, status), in five grouped queries whatever their number."""
    figures = {rid: RunFigures(rid, status) for rid, status in runs}
    if not figures:
        return figures
    ids = list(figures)
    _read_jobs(conn, ids, figures)
    _read_ratings(conn, ids, figures)
    _read_calls(conn, ids, figures)
    for rid, spent in conn.execute(
        select(col(Run.id), col(Run.spent_usd)).where(col(Run.id).in_(ids))
    ).all():
        figures[rid].spent_usd = float(spent or 0.0)
    return figures


def _read_jobs(conn: Connection, ids: list[str], figures: dict[str, RunFigures]) -> None:
    rows = conn.execute(
        select(
            col(Job.run_id),
            col(Job.fold),
            col(Job.kind),
            col(Job.state),
            func.count(),
            func.coalesce(func.sum(col(Job.attempts)), 0),
            func.coalesce(func.sum(col(Job.reasks)), 0),
            func.max(col(Job.updated_at)),
        )
        .where(col(Job.run_id).in_(ids))
        .group_by(col(Job.run_id), col(Job.fold), col(Job.kind), col(Job.state))
    ).all()
    for rid, fold, kind, state, n, attempts, reasks, updated in rows:
        run = figures[rid]
        run.jobs[(fold, kind, state)] = int(n)
        run.attempts[(fold, kind)] = run.attempts.get((fold, kind), 0) + int(attempts)
        run.reasks[(fold, kind)] = run.reasks.get((fold, kind), 0) + int(reasks)
        if updated is not None:
            stamp = _unix(updated)
            run.last_progress_s = max(run.last_progress_s or stamp, stamp)


def _read_ratings(conn: Connection, ids: list[str], figures: dict[str, RunFigures]) -> None:
    rows = conn.execute(
        select(
            col(SimulatedRating.run_id),
            col(SimulatedRating.fold),
            func.count(),
            func.count(col(SimulatedRating.rating)),
        )
        .where(col(SimulatedRating.run_id).in_(ids))
        .group_by(col(SimulatedRating.run_id), col(SimulatedRating.fold))
    ).all()
    for rid, fold, planned, stored in rows:
        figures[rid].ratings_planned[fold] = int(planned)
        figures[rid].ratings_stored[fold] = int(stored)


def _read_calls(conn: Connection, ids: list[str], figures: dict[str, RunFigures]) -> None:
    # One group per (run, fold, cached, latency bucket), summed up here: a dozen conditional
    # sums per row cost PostgreSQL more than one CASE and a few more groups.
    latency = col(LLMCall.latency_s)
    bucket = case(
        *((latency <= bound, index) for index, bound in enumerate(LATENCY_BUCKETS)),
        else_=len(LATENCY_BUCKETS),
    )
    rows = conn.execute(
        select(
            col(CallUse.run_id),
            col(CallUse.fold),
            col(CallUse.cached),
            bucket,
            func.count(),
            func.coalesce(func.sum(col(CallUse.retries)), 0),
            func.coalesce(func.sum(col(LLMCall.prompt_tokens)), 0),
            func.coalesce(func.sum(col(LLMCall.completion_tokens)), 0),
            func.coalesce(func.sum(col(LLMCall.cached_tokens)), 0),
            func.coalesce(func.sum(col(LLMCall.cost_usd)), 0),
            func.coalesce(func.sum(latency), 0),
        )
        .join(LLMCall, col(LLMCall.key) == col(CallUse.call_key))
        .where(col(CallUse.run_id).in_(ids))
        .group_by(col(CallUse.run_id), col(CallUse.fold), col(CallUse.cached), bucket)
    ).all()
    for rid, fold, cached, index, n, retries, prompt, completion, cached_tok, cost, lat in rows:
        calls = figures[rid].calls.setdefault(fold, CallFigures())
        calls.retries += int(retries)
        if cached:
            # An answer from the cache: no tokens, cost or latency of this run's.
            calls.cached_calls += int(n)
            continue
        calls.api_calls += int(n)
        calls.prompt_tokens += int(prompt)
        calls.completion_tokens += int(completion)
        calls.cached_prompt_tokens += int(cached_tok)
        calls.cost_usd += float(cost)
        calls.latency_sum_s += float(lat)
        # Cumulative: a call in bucket i counts for every bound from i on.
        for bound in range(int(index), len(LATENCY_BUCKETS)):
            calls.latency_le[bound] += int(n)


def _unix(value: datetime) -> float:
    # SQLite hands back naive datetimes; they were written in UTC.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class FigureCache:
    """Figures of ended runs, read once: they cannot change any more."""

    def __init__(self) -> None:
        self._ended: dict[str, RunFigures] = {}

    def read(
        self, engine: Engine, window: timedelta, max_runs: int, timeout_s: float
    ) -> list[RunFigures]:
        """The watched runs' figures, newest first; only open runs are read again."""
        with engine.begin() as conn:
            limit_statement_time(conn, timeout_s)
            runs = watched_runs(conn, window, max_runs)
            wanted = [(rid, st) for rid, st in runs if not self._is_known_final(rid, st)]
            fresh = read_runs(conn, wanted)
        for rid, figures in fresh.items():
            if figures.ended:
                self._ended[rid] = figures
        watched = {rid for rid, _ in runs}
        self._forget(set(self._ended) - watched)
        return [fresh.get(rid) or self._ended[rid] for rid, _ in runs]

    def _is_known_final(self, run_id: str, status: str) -> bool:
        return status in RunStatus.ENDED and run_id in self._ended

    def _forget(self, run_ids: Iterable[str]) -> None:
        for rid in run_ids:
            self._ended.pop(rid, None)
