"""LLM fault injection, measured: a run against a stub that fails every n-th call, audited.

    PYTHONPATH=. LUSIFER_DATA_DIR=../shared/data python bench/faults.py

It starts its own redis-server, a fresh PostgreSQL schema (127.0.0.1:5432, db `test`), two
Celery worker processes and the stub server, runs `lusifer run` in cluster mode, and prints
what was injected and what it cost, measured from the stub's request log and the database
(see ``lusifer.stub.audit``). Every 5th chat request failing (the default) is 20 %, cycling
through every fault kind in turn. Exits 1 when a result was lost or duplicated or a call that
had succeeded was sent again.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lusifer.store.engines import create_tables, get_engine
from lusifer.stub import FAULT_KINDS
from lusifer.stub.audit import RunAudit, audit_run
from tests.integration.services import (
    celery_workers,
    postgres_schema,
    redis_server,
    run_cli,
    service_env,
    stub_server,
)

REPORT_LINE = re.compile(r"re-asks: (\d+)\s+transient retries: (\d+)")


@dataclass(frozen=True)
class FaultBench:
    """One audited run against a faulty LLM."""

    every_n: int
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    audit: RunAudit
    report_reasks: int | None
    report_retries: int | None

    @property
    def clean(self) -> bool:
        """Completed with nothing lost, duplicated, or paid twice."""
        a = self.audit
        return (
            self.returncode == 0
            and a.lost_results == 0
            and a.duplicated_results == 0
            and a.repeated_successful_calls == 0
            and a.jobs_failed == 0
        )


def run_fault_bench(
    data_dir: Path,
    work_dir: Path,
    *,
    every_n: int = 5,
    faults: tuple[str, ...] = FAULT_KINDS,
    folds: str = "u1,u2",
    users: str = "2,3,8,24",
    llm_timeout_s: float = 2.0,
) -> FaultBench:
    """Run the simulation with every ``every_n``-th LLM call faulted, and audit it."""
    run_id = f"faults-{secrets.token_hex(3)}"
    stub_args = ["--fault-every-n", str(every_n), "--faults", ",".join(faults)]
    # A timeout fault answers long after the client has given up.
    stub_args += ["--timeout-sleep", str(3 * llm_timeout_s)]
    with (
        redis_server(work_dir) as broker,
        postgres_schema("lusifer_faults") as url,
        stub_server(*stub_args) as stub,
    ):
        create_tables(get_engine(url))
        queue = f"faults-{secrets.token_hex(3)}"
        env = service_env(url, queue, None, LUSIFER_BROKER_URL=broker.url, LUSIFER_LLM_ATTEMPTS="6")
        args = [
            *("run", "--base-url", stub.base_url, "--model", "stub-model", "--temperature", "0"),
            *("--folds", folds, "--users", users, "--chunk-size", "5", "--max-reask", "3"),
            *("--llm-timeout", str(llm_timeout_s), "--data-dir", str(data_dir)),
            *("--run-id", run_id),
        ]
        started = time.monotonic()
        with celery_workers(env, work_dir, count=2, threads=4):
            result = run_cli(args, env, work_dir, timeout=300)
        seconds = time.monotonic() - started
        audit = audit_run(get_engine(url), run_id, stub.requests())
    printed = REPORT_LINE.search(result.stdout)
    return FaultBench(
        every_n=every_n,
        returncode=result.returncode,
        stdout=result.stdout,
        stderr=result.stderr,
        seconds=seconds,
        audit=audit,
        report_reasks=int(printed.group(1)) if printed else None,
        report_retries=int(printed.group(2)) if printed else None,
    )


def fault_table(bench: FaultBench) -> Table:
    """The figures of a fault run, as the issue asks for them."""
    a = bench.audit
    table = Table(
        title=f"LLM faults: every {bench.every_n}th call ({100 / bench.every_n:.0f} %)",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("what")
    table.add_column("count", justify="right")
    for kind in FAULT_KINDS:
        if kind in a.faults:
            table.add_row(f"fault injected: {kind}", str(a.faults[kind]))
    table.add_row("faults injected, total", str(sum(a.faults.values())), style="bold")
    table.add_section()
    rows = [
        ("jobs (failed)", f"{a.jobs} ({a.jobs_failed})"),
        ("LLM requests sent", str(a.chat_requests)),
        ("distinct LLM calls recorded", str(a.calls)),
        ("retries (same request sent again)", str(a.retries)),
        ("re-asks (invalid or incomplete answer)", str(a.reasks)),
        ("expected ratings", str(a.expected_ratings)),
        ("lost results", str(a.lost_results)),
        ("duplicated results", str(a.duplicated_results)),
        ("repeated successful calls", str(a.repeated_successful_calls)),
        ("answers that reached the client twice", str(a.answered_twice)),
        ("requests matching no recorded call", str(a.unmatched_requests)),
        ("report: re-asks / in-call retries", f"{bench.report_reasks} / {bench.report_retries}"),
        ("run exit status", str(bench.returncode)),
        ("wall time (s, noisy: shared 2-core machine)", f"{bench.seconds:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print its table; exit 1 unless the run is clean."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_data = os.environ.get("LUSIFER_DATA_DIR", "../shared/data")
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--every-n", type=int, default=5, help="fault every n-th call")
    parser.add_argument("--folds", default="u1,u2")
    parser.add_argument("--users", default="2,3,8,24")
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="lusifer-faults-") as work:
        bench = run_fault_bench(
            args.data_dir, Path(work), every_n=args.every_n, folds=args.folds, users=args.users
        )
    console.print(fault_table(bench))
    if bench.returncode != 0:
        console.print(bench.stderr.strip() or bench.stdout[-2000:])
    return 0 if bench.clean else 1


if __name__ == "__main__":
    sys.exit(main())
