"""Running a planned run of the Python API on the command line's engine.

The same path as `lusifer run` and `lusifer resume`: ``run_services`` (embedded broker,
database and workers by default, the cluster when LUSIFER_BROKER_URL / LUSIFER_DATABASE_URL
are set), the run lock, the stored plan, and ``follow`` with its progress bars. Run ids are
derived from the input, so a second call with the same input finds its run: finished, it is
only read back (no job, no LLM call); interrupted, it is resumed.
"""

from __future__ import annotations

import hashlib

from rich.console import Console

from coordinator.plan import Plan, store_plan
from coordinator.run_lock import hold_run
from coordinator.runner import follow_run
from coordinator.services import Services
from lusifer.core.settings import Settings
from lusifer.data import Dataset
from lusifer.store.run_states import reset_unfinished, run_status, set_run_status
from lusifer.store.tables import RunStatus


def input_run_id(kind: str, *parts: str) -> str:
    """A run id that names its input: the same frames and settings give the same id."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]
    return f"api-{kind}-{digest}"


def run_plan(
    services: Services,
    settings: Settings,
    plan: Plan,
    dataset: Dataset,
    console: Console,
) -> str:
    """Store and follow a new run, resume an unfinished one, or leave a finished one alone.

    Returns what happened: "new", "resumed" or "stored". Ctrl-C leaves the run resumable:
    the same call again goes on where it stopped.
    """
    run_id = str(plan.run["id"])
    engine = services.engine
    with hold_run(engine, run_id):
        status = run_status(engine, run_id)
        if status == RunStatus.DONE:
            return "stored"
        if status is None:
            store_plan(engine, plan, dataset)
            set_run_status(engine, run_id, RunStatus.RUNNING)
            outcome = "new"
        else:
            reopened = reset_unfinished(
                engine, run_id, include_running=services.health_check is not None
            )
            console.print(f"resuming run {run_id}: {reopened} unfinished jobs sent again")
            outcome = "resumed"
        try:
            follow_run(services, run_id, settings, console)
        except KeyboardInterrupt:
            console.print(
                f"[yellow]interrupted[/]: run {run_id} is kept; the same call again resumes it "
                "(calls that succeeded come from the cache)"
            )
            raise
    return outcome
