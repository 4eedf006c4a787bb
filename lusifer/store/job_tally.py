"""A run's job counts by kind and state, kept by the database instead of counted each time.

The job table's triggers (migration 0006) append every change of a run's counts to
``jobtallydelta``; ``fold_tally`` moves them into ``jobtally``. Reading the counts then costs
the tally's few rows plus the deltas since the last fold, at 1,000 jobs as at 5 million.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Connection, Engine, text

# PostgreSQL: one statement, atomic on its own. Two folds at once (the coordinator and a
# `lusifer status`) never move a delta twice: the second DELETE skips rows the first took.
_FOLD_PG = text(
    "WITH moved AS (DELETE FROM jobtallydelta WHERE run_id = :run_id "
    "RETURNING kind, state, delta) "
    "INSERT INTO jobtally (run_id, kind, state, n) "
    "SELECT :run_id, kind, state, sum(delta) FROM moved GROUP BY kind, state "
    "ON CONFLICT (run_id, kind, state) DO UPDATE SET n = jobtally.n + excluded.n"
)
# SQLite has no DELETE in a WITH clause; one writer at a time makes the two statements safe
# within a transaction, bounded by the newest delta seen.
_LAST_DELTA = text("SELECT max(id) FROM jobtallydelta WHERE run_id = :run_id")
_FOLD_SQLITE = text(
    "INSERT INTO jobtally (run_id, kind, state, n) "
    "SELECT :run_id, kind, state, sum(delta) FROM jobtallydelta "
    "WHERE run_id = :run_id AND id <= :last GROUP BY kind, state "
    "ON CONFLICT (run_id, kind, state) DO UPDATE SET n = jobtally.n + excluded.n"
)
_DROP_SQLITE = text("DELETE FROM jobtallydelta WHERE run_id = :run_id AND id <= :last")
_COUNTS = text(
    "SELECT kind, state, sum(n) FROM ("
    "SELECT kind, state, n FROM jobtally WHERE run_id = :run_id "
    "UNION ALL SELECT kind, state, delta FROM jobtallydelta WHERE run_id = :run_id"
    ") AS parts GROUP BY kind, state"
)


def fold_tally(engine: Engine, run_id: str) -> None:
    """Move the run's pending count changes into its tally (keeps later reads short)."""
    with engine.begin() as conn:
        _fold(conn, run_id)


def _fold(conn: Connection, run_id: str) -> None:
    if conn.dialect.name == "postgresql":
        # A poll need not wait for the disk: the fold and the deltas it removes commit or are
        # lost together, so a crash can only leave them to the next fold.
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(_FOLD_PG, {"run_id": run_id})
        return
    last = conn.execute(_LAST_DELTA, {"run_id": run_id}).scalar()
    if last is not None:
        params = {"run_id": run_id, "last": last}
        conn.execute(_FOLD_SQLITE, params)
        conn.execute(_DROP_SQLITE, params)


def tallied_counts(engine: Engine, run_id: str) -> dict[str, dict[str, int]]:
    """Number of jobs of a run per kind and state (states with none left out)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with engine.connect() as conn:
        rows = conn.execute(_COUNTS, {"run_id": run_id}).all()
    for kind, state, n in rows:
        if n:
            counts[kind][state] = int(n)
    return counts
