"""Vacuuming the tables that work as queues, so a long run's polls stay as cheap as its first.

Every poll deletes the tally deltas it folds (``job_tally``): on a large run that is hundreds of
thousands of dead rows an hour. Autovacuum clears them where it runs, but it can be off (it is
on the shared server of our test machines): there, 20 minutes into a million-job run the
delta table held 1.3 M dead rows and folding it cost 200-750 ms a poll instead of a few. The
coordinator vacuums these small tables itself, once a sweep.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("lusifer.store")

# Small tables whose rows are inserted and deleted all the time.
QUEUE_TABLES = ("jobtallydelta",)


def vacuum_queue_tables(engine: Engine) -> None:
    """VACUUM the queue-like tables (PostgreSQL; SQLite reuses freed pages by itself).

    Never in the way of a run: a table locked by someone else is skipped, a role that does
    not own it gets a warning from PostgreSQL, and any failure is logged and left to the
    next sweep.
    """
    if engine.dialect.name != "postgresql":
        return
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in QUEUE_TABLES:
                conn.execute(text(f"VACUUM (SKIP_LOCKED) {table}"))
    except SQLAlchemyError as err:
        log.warning("could not vacuum %s: %s", ", ".join(QUEUE_TABLES), err)
