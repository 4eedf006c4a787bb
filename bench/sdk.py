"""Figure 5: the openai SDK (``AsyncOpenAI`` over its aiohttp transport) against the workers'
hand-written aiohttp client, at 128 calls in flight against the stub server.

Each measurement is a fresh process (``bench.sdk_calls``) that warms up its connections, then
keeps ``in_flight`` rating calls outstanding and reports its own CPU time per call and its
calls per second. The clients take turns (ABC, CBA, ABC, ...) against one stub per latency so
that a busy spell of a shared machine falls on all of them. CPU ms per call is the figure that
decides: wall-clock rates on a shared machine follow the load as much as the code.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.cpu import process_cpu_s
from bench.report import Table, console, print_table
from bench.sdk_calls import CLIENTS
from lusifer.core.errors import ServiceError
from tests.integration.services import stub_server

ROOT = Path(__file__).resolve().parents[1]
# The SDK is adopted when its CPU per call is within this factor of the hand-written client's.
ADOPTION_FACTOR = 1.15
RUN_TIMEOUT_S = 900.0


def _one_run(client: str, base_url: str, calls: int, in_flight: int) -> dict[str, Any]:
    """One client's measurement in a process of its own."""
    command = [sys.executable, "-m", "bench.sdk_calls", client, base_url]
    command += ["--calls", str(calls), "--in-flight", str(in_flight)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise ServiceError(
            f"the {client} measurement did not finish within {RUN_TIMEOUT_S:.0f} s; "
            "lower --calls or run on a quieter machine"
        ) from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ServiceError(f"the {client} measurement failed: {reason}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _summary(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure_sdk(
    *,
    latencies: tuple[float, ...] = (0.0, 1.0),
    repetitions: int = 5,
    calls: int = 2560,
    in_flight: int = 128,
    clients: tuple[str, ...] = CLIENTS,
) -> dict[str, Any]:
    """Interleaved runs of every client against a stub at each latency."""
    rows: list[dict[str, Any]] = []
    for latency in latencies:
        with stub_server("--latency", str(latency)) as stub:
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
            for repetition in range(repetitions):
                order = clients if repetition % 2 == 0 else tuple(reversed(clients))
                for client in order:
                    stub_cpu = process_cpu_s(stub.process.pid)
                    run = _one_run(client, stub.base_url, calls, in_flight)
                    # The stub served the warm-up calls too: per call of the whole process.
                    stub_cpu = process_cpu_s(stub.process.pid) - stub_cpu
                    run["stub_cpu_ms_per_call"] = 1000 * stub_cpu / (calls + in_flight)
                    runs[client].append(run)
                    console.print(
                        f"[dim]latency {latency:g} s, run {repetition + 1}/{repetitions}, "
                        f"{client}: {run['cpu_ms_per_call']:.2f} CPU ms/call, "
                        f"{run['calls_per_s']:.0f} calls/s[/]"
                    )
        for client in clients:
            rows.append(
                {
                    "latency_s": latency,
                    "client": client,
                    "runs": runs[client],
                    "cpu_ms_per_call": _summary(runs[client], "cpu_ms_per_call"),
                    "calls_per_s": _summary(runs[client], "calls_per_s"),
                    "stub_cpu_ms_per_call": _summary(runs[client], "stub_cpu_ms_per_call"),
                }
            )
    return {
        "in_flight": in_flight,
        "calls_per_run": calls,
        "repetitions": repetitions,
        "versions": {p: version(p) for p in ("openai", "aiohttp", "httpx2")},
        "rows": rows,
        "sdk_cpu_factor": _sdk_factor(rows),
    }


def _sdk_factor(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The SDK's median CPU per call over the hand-written client's, per latency."""
    medians = {(r["latency_s"], r["client"]): r["cpu_ms_per_call"]["median"] for r in rows}
    return {
        f"{latency:g}": medians[(latency, "sdk")] / medians[(latency, "aiohttp")]
        for latency, client in medians
        if client == "sdk" and (latency, "aiohttp") in medians
    }


def print_sdk(figure: dict[str, Any]) -> None:
    """The figure as a table, one row per latency and client."""
    versions = ", ".join(f"{p} {v}" for p, v in figure["versions"].items())
    table = Table(
        title=f"5. openai SDK against the hand-written aiohttp client "
        f"({figure['in_flight']} in flight, {figure['repetitions']} interleaved runs; {versions})"
    )
    for name in ("stub latency", "client", "CPU ms/call", "calls/s", "stub CPU ms/call"):
        table.add_column(name, justify="right")
    table.add_column("CPU vs aiohttp", justify="right")
    base = {
        r["latency_s"]: r["cpu_ms_per_call"]["median"]
        for r in figure["rows"]
        if r["client"] == "aiohttp"
    }
    for r in figure["rows"]:
        against = "—"
        if r["latency_s"] in base:
            factor = r["cpu_ms_per_call"]["median"] / base[r["latency_s"]]
            style = "green" if factor <= ADOPTION_FACTOR else "red"
            against = f"[{style}]{factor:.2f}x[/]"
        table.add_row(
            f"{r['latency_s']:g} s",
            r["client"],
            _spread(r["cpu_ms_per_call"], 2),
            _spread(r["calls_per_s"], 0),
            _spread(r["stub_cpu_ms_per_call"], 2),
            against,
        )
    print_table(table)


def _spread(summary: dict[str, float], digits: int) -> str:
    low, high = f"{summary['min']:.{digits}f}", f"{summary['max']:.{digits}f}"
    return f"{summary['median']:.{digits}f} ({low}–{high})"
