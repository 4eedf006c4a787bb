"""`lusifer metrics`: serve Lusifer's Prometheus endpoint, read from the database and broker."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from coordinator.cli.common import app, console, guard, settings_or_fail
from lusifer.core.errors import ConfigurationError
from lusifer.core.settings import Settings

if TYPE_CHECKING:
    # The server, the database and prometheus_client are imported by the command itself:
    # every other `lusifer` command would pay for them at start.
    from sqlalchemy import Engine

    from coordinator.metrics.broker import BrokerReader

DEFAULT_PORT = 9808


def metrics_engine(url: str, timeout_s: float) -> Engine:
    """A pool of one connection: scrapes take turns, and PostgreSQL's 100 stay for workers."""
    from sqlalchemy import create_engine

    from lusifer.store.engines import get_engine

    if not url.startswith("postgresql"):
        return get_engine(url)
    return create_engine(
        url,
        pool_size=1,
        max_overflow=1,
        pool_timeout=timeout_s,
        # A scrape may come minutes after the last: check the connection is still there.
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(2, round(timeout_s))},
    )


def _broker(settings: Settings, queues: list[str] | None, timeout_s: float) -> BrokerReader | None:
    from coordinator.metrics.broker import BrokerReader

    if not settings.broker_url:
        return None
    names = tuple(queues or [settings.queue])
    return BrokerReader(settings.broker_url, names, timeout_s)


@app.command()
def metrics(
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 in a container)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of /metrics, /scale and /ready")] = DEFAULT_PORT,
    queue: Annotated[
        list[str] | None, typer.Option(help="Job queue to measure (default LUSIFER_QUEUE)")
    ] = None,
    window_hours: Annotated[
        float, typer.Option(help="Runs that ended within this many hours stay in the figures")
    ] = 24.0,
    max_runs: Annotated[int, typer.Option(help="Newest runs shown at most", min=1)] = 20,
    query_timeout: Annotated[
        float, typer.Option(help="Seconds one scrape may spend on the database or broker")
    ] = 5.0,
    min_interval: Annotated[
        float, typer.Option(help="Scrapes closer than this many seconds share one read")
    ] = 5.0,
) -> None:
    """Serve Prometheus metrics of the runs (jobs, ratings, LLM calls, tokens, cost, queue)."""

    def action() -> None:
        from coordinator.database_url import database_url_of
        from coordinator.metrics.collector import LusiferCollector
        from coordinator.metrics.server import serve
        from lusifer.store.engines import redact_url, require_tables

        if not 0 < port < 65536:
            raise ConfigurationError(f"--port {port} is not a TCP port; choose 1..65535")
        if query_timeout <= 0 or min_interval < 0 or window_hours <= 0:
            raise ConfigurationError(
                "--query-timeout and --window-hours must be positive, --min-interval not negative"
            )
        settings = settings_or_fail()
        url = database_url_of(settings)
        engine = metrics_engine(url, query_timeout)
        # Refused at start with one line: a database that is not there, or not Lusifer's.
        require_tables(engine)
        collector = LusiferCollector(
            engine,
            _broker(settings, queue, query_timeout),
            window=timedelta(hours=window_hours),
            max_runs=max_runs,
            timeout_s=query_timeout,
            min_interval_s=min_interval,
        )
        try:
            server = serve(collector, host, port)
        except OSError as err:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port"
            ) from None
        broker = redact_url(settings.broker_url) if settings.broker_url else "none"
        console.print(
            f"serving metrics on http://{escape(host)}:{port}/metrics "
            f"(database {escape(redact_url(url))}, broker {escape(broker)})",
            highlight=False,
            soft_wrap=True,
        )
        try:
            server.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:  # SIGTERM arrives as this (``coordinator.cli.run.main``)
            console.print("metrics server stopped")
        finally:
            server.server_close()
            engine.dispose()

    guard(action)
