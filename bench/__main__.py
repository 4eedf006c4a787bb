"""`python -m bench`: the benchmark figures of Lusifer (not part of the test suite).

Figures 1 and 2 need the cluster services of the integration tests: Redis on 127.0.0.1:6379
(database 11) and PostgreSQL on 127.0.0.1:5432 (database `test`, user `postgres`). Figures 3
and 4 run `lusifer run` in local mode, with the local SmolLM2 model unless `--stub`. Figure 5
needs only the stub server.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from bench.overhead import (
    ALL_FOLDS,
    measure_local_against_cluster,
    measure_overhead,
    print_local_against_cluster,
    print_overhead,
)
from bench.report import console, save_figure
from bench.scale import measure_scale, print_scale, print_scale_polls
from bench.sdk import measure_sdk, print_sdk
from bench.sdk_calls import CLIENTS
from bench.throughput import measure_throughput, print_throughput
from bench.tokens import PROMPT_SETS, measure_tokens, print_tokens, print_utilisation
from lusifer.core.errors import LusiferError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

DEFAULT_DATA = Path(
    os.environ.get("LUSIFER_DATA_DIR") or Path(__file__).parents[1] / "../shared/data"
)
DataDir = Annotated[Path, typer.Option(help="Directory holding ml-100k/ (and tmdb/)")]
JsonOut = Annotated[Path, typer.Option("--json", help="JSON file the figures are merged into")]
DEFAULT_JSON = Path("bench-results.json")


def _layouts(text: str, in_flight: int) -> list[tuple[int, int]]:
    """Worker processes and threads per process that keep ``in_flight`` calls in flight."""
    layouts = []
    for part in text.split(","):
        processes = int(part)
        if processes < 1 or in_flight % processes:
            raise typer.BadParameter(f"{in_flight} calls in flight do not split over {processes}")
        layouts.append((processes, in_flight // processes))
    return layouts


@app.command()
def overhead(
    data_dir: DataDir = DEFAULT_DATA,
    folds: Annotated[str, typer.Option(help="Folds to plan")] = ",".join(ALL_FOLDS),
    max_users: Annotated[int | None, typer.Option(help="First N users per fold (all)")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 2,
    threads: Annotated[int, typer.Option(help="Threads per worker process")] = 8,
    profile_dir: Annotated[
        Path | None, typer.Option(help="Sample every process with py-spy into this directory")
    ] = None,
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """1. Orchestration overhead: the whole plan against an instant stub."""
    result = measure_overhead(
        data_dir.resolve(),
        folds=tuple(f.strip() for f in folds.split(",") if f.strip()),
        max_users=max_users,
        workers=workers,
        threads=threads,
        profile_dir=profile_dir,
    )
    print_overhead(result)
    save_figure(json_path, "overhead", result)


@app.command("local")
def local_against_cluster(
    data_dir: DataDir = DEFAULT_DATA,
    folds: Annotated[str, typer.Option(help="Folds to plan")] = "u1",
    max_users: Annotated[int | None, typer.Option(help="First N users per fold (all)")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    threads: Annotated[int, typer.Option(help="Threads per worker process")] = 80,
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """1b. Figure 1 for local mode's embedded PostgreSQL and Redis beside the cluster's."""
    result = measure_local_against_cluster(
        data_dir.resolve(),
        folds=tuple(f.strip() for f in folds.split(",") if f.strip()),
        max_users=max_users,
        workers=workers,
        threads=threads,
    )
    for figure in result["figures"].values():
        print_overhead(figure)
    print_local_against_cluster(result)
    save_figure(json_path, "local_against_cluster", result)


@app.command()
def throughput(
    data_dir: DataDir = DEFAULT_DATA,
    processes: Annotated[str, typer.Option(help="Worker process counts to measure")] = "1,2,4",
    in_flight: Annotated[int, typer.Option(help="Calls in flight in total")] = 128,
    latency: Annotated[float, typer.Option(help="Stub latency in seconds")] = 1.0,
    max_users: Annotated[int, typer.Option(help="Users of fold u1 to plan")] = 300,
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """2. Throughput against the ideal at a slow stub, for 1, 2 and 4 worker processes."""
    results = []
    for p, t in _layouts(processes, in_flight):
        results.append(
            measure_throughput(
                data_dir.resolve(), processes=p, threads=t, latency_s=latency, max_users=max_users
            )
        )
        print_throughput(results[-1:])
        save_figure(json_path, "throughput", {"layouts": results})
    print_throughput(results)


@app.command()
def sdk(
    latencies: Annotated[str, typer.Option(help="Stub latencies in seconds")] = "0,1",
    repetitions: Annotated[int, typer.Option(help="Interleaved runs of each client")] = 5,
    calls: Annotated[int, typer.Option(help="Measured calls per run")] = 2560,
    in_flight: Annotated[int, typer.Option(help="Calls kept in flight")] = 128,
    clients: Annotated[str, typer.Option(help="Clients to compare")] = ",".join(CLIENTS),
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """5. The openai SDK's aiohttp client against the hand-written one: CPU ms/call, calls/s."""
    chosen = tuple(c.strip() for c in clients.split(",") if c.strip())
    unknown = sorted(set(chosen) - set(CLIENTS))
    if unknown or not chosen:
        raise typer.BadParameter(f"clients are {', '.join(CLIENTS)}; got {clients!r}")
    try:
        waits = tuple(float(part) for part in latencies.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"latencies are seconds, e.g. 0,1; got {latencies!r}") from None
    if repetitions < 1 or calls < 1 or in_flight < 1 or any(w < 0 for w in waits) or not waits:
        raise typer.BadParameter("repetitions, calls and in-flight are positive; latencies >= 0")
    figure = measure_sdk(
        latencies=waits,
        repetitions=repetitions,
        calls=calls,
        in_flight=in_flight,
        clients=chosen,
    )
    print_sdk(figure)
    save_figure(json_path, "sdk", figure)


LocalUsers = Annotated[int, typer.Option(help="Users of the fold, the same for both prompt sets")]
Overviews = Annotated[int, typer.Option(help="Longest overview in prompts; 0: none")]
UseStub = Annotated[bool, typer.Option("--stub", help="The stub instead of the local model")]


def _local_figures(
    data_dir: Path,
    users: int,
    overview_chars: int,
    stub: bool,
    json_path: Path,
    prompt_sets: tuple[str, ...],
) -> None:
    """Run local mode with each prompt set; print and keep figures 3 (with both) and 4."""
    figure = measure_tokens(
        data_dir.resolve(),
        users=users,
        overview_chars=overview_chars,
        use_stub=stub,
        prompt_sets=prompt_sets,
    )
    if len(prompt_sets) > 1:
        print_tokens(figure)
        save_figure(json_path, "tokens", figure)
    print_utilisation(figure)
    save_figure(json_path, "utilisation", figure)


@app.command()
def tokens(
    data_dir: DataDir = DEFAULT_DATA,
    users: LocalUsers = 10,
    overview_chars: Overviews = 600,
    stub: UseStub = False,
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """3. Prompt tokens per simulated rating and fidelity: `paper` against `lusifer`."""
    _local_figures(data_dir, users, overview_chars, stub, json_path, PROMPT_SETS)


@app.command()
def utilisation(
    data_dir: DataDir = DEFAULT_DATA,
    users: LocalUsers = 10,
    overview_chars: Overviews = 600,
    stub: UseStub = False,
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """4. The model server's utilisation during a `lusifer` run (busy ÷ wall time)."""
    _local_figures(data_dir, users, overview_chars, stub, json_path, ("lusifer",))


@app.command("env-steps")
def env_steps(
    data_dir: DataDir = DEFAULT_DATA,
    latency: Annotated[float, typer.Option(help="Stub latency in seconds")] = 1.0,
    steps: Annotated[int, typer.Option(help="Measured vector steps per row")] = 5,
    users: Annotated[str, typer.Option(help="Users stepped at once")] = "1,16,64",
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """6. Environment steps per second (SB3VecEnv) through threads and Celery workers."""
    # Imported here: it needs the rl extra (stable-baselines3), which the other figures do not.
    from bench.env_steps import measure_env_steps, print_env_steps

    counts = tuple(int(part) for part in users.split(",") if part.strip())
    figure = measure_env_steps(data_dir.resolve(), latency_s=latency, steps=steps, users=counts)
    print_env_steps(figure)
    save_figure(json_path, "env_steps", figure)


@app.command()
def scale(
    shape: Annotated[str, typer.Option(help="ml1m or ml1m-10x-users")] = "ml1m",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data")] = 0,
    prompt_set: Annotated[str, typer.Option(help="lusifer, or paper (one item per call)")] = (
        "lusifer"
    ),
    max_users: Annotated[int | None, typer.Option(help="First N users per fold (all)")] = None,
    run_s: Annotated[float, typer.Option(help="Seconds to follow the run with workers")] = 120.0,
    poll_steps: Annotated[int, typer.Option(help="Shares of done jobs to time a poll at")] = 10,
    old_timeout_s: Annotated[float, typer.Option(help="Cap on the old poll's time")] = 30.0,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 2,
    threads: Annotated[int, typer.Option(help="Threads per worker process")] = 64,
    plan_only: Annotated[
        bool, typer.Option(help="Load, plan and store only: no worker, stub or broker")
    ] = False,
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """7. A million jobs without a stall: plan memory, enqueue, poll cost, a long stretch."""
    figure = measure_scale(
        shape,
        seed=seed,
        prompt_set=prompt_set,
        max_users=max_users,
        run_s=run_s,
        poll_steps=poll_steps,
        old_timeout_s=old_timeout_s,
        workers=workers,
        threads=threads,
        plan_only=plan_only,
    )
    print_scale(figure, old_timeout_s)
    save_figure(json_path, f"scale-{shape}-{prompt_set}", figure)


@app.command("scale-enqueue")
def scale_enqueue(
    jobs: Annotated[int, typer.Option(help="Ready jobs to send")] = 300_000,
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """7b. The first enqueue of a large run and the lost-message scan, without its data."""
    from bench.scale_phases import measure_enqueue_alone

    figure = measure_enqueue_alone(jobs)
    console.print(
        f"sent {figure['sent']} jobs in {figure['enqueue_s']:.1f} s "
        f"({figure['enqueue_us_per_job']:.0f} µs each, coordinator CPU "
        f"{figure['enqueue_cpu_us_per_job']:.0f} µs); scanned {figure['held_in_broker']} "
        f"messages in {figure['lost_scan_s']:.2f} s ({figure['lost_scan_us_per_message']:.1f} "
        f"µs each, CPU {figure['lost_scan_cpu_us_per_message']:.1f} µs)"
    )
    save_figure(json_path, "scale-enqueue", figure)


@app.command("scale-polls")
def scale_polls(
    users: Annotated[int, typer.Option(help="Users (x 5 folds)")] = 6_040,
    ratings_per_user: Annotated[int, typer.Option(help="One-item rating jobs per user")] = 33,
    poll_steps: Annotated[int, typer.Option(help="Shares of done jobs to time a poll at")] = 8,
    old_timeout_s: Annotated[float, typer.Option(help="Cap on the old poll's time")] = 20.0,
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """7c. One poll's cost along a million-job run (rows made in the database), new and old."""
    from bench.scale_phases import measure_polls_alone

    figure = measure_polls_alone(users, ratings_per_user, poll_steps, old_timeout_s)
    print_scale_polls(figure["polls"], old_timeout_s)
    save_figure(json_path, "scale-polls", figure)


@app.command("all")
def all_figures(
    data_dir: DataDir = DEFAULT_DATA,
    users: LocalUsers = 10,
    overview_chars: Overviews = 600,
    stub: UseStub = False,
    json_path: JsonOut = DEFAULT_JSON,
) -> None:
    """Every figure with its defaults (figures 3 and 4 share their runs)."""
    overhead(data_dir=data_dir, json_path=json_path)
    throughput(data_dir=data_dir, json_path=json_path)
    tokens(
        data_dir=data_dir,
        users=users,
        overview_chars=overview_chars,
        stub=stub,
        json_path=json_path,
    )


def _interrupt(_signum: int, _frame: object) -> None:
    # As KeyboardInterrupt, SIGTERM unwinds the services: workers, stub and schema go too.
    raise KeyboardInterrupt


def main() -> None:
    """Run the command line; a Lusifer error ends with its one line."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    except LusiferError as err:
        console.print(f"[red]error:[/] {err}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
