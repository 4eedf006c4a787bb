"""The HTTP side of `lusifer metrics`: /metrics for Prometheus, /scale for KEDA, /ready.

``/scale`` answers JSON for KEDA's ``metrics-api`` scaler: the jobs of open runs that are
queued or running. Queue length alone drops to zero while the last jobs still run, and would
let KEDA take away the workers running them; ``active_jobs`` counts those too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from coordinator.metrics.collector import LusiferCollector

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        """Drop the line."""


def scale_figures(collector: LusiferCollector) -> dict[str, Any]:
    """What KEDA's metrics-api scaler reads: jobs queued and running, and queued messages."""
    snap = collector.snapshot()
    if snap.runs is None:
        raise LookupError(snap.errors.get("database", "database not read"))
    active = snap.active_jobs()
    waiting = sum(snap.queues.waiting.values()) if snap.queues is not None else None
    return {
        "queued_jobs": active["queued"],
        "running_jobs": active["running"],
        "pending_jobs": active["pending"],
        "active_jobs": active["queued"] + active["running"],
        "queued_messages": waiting,
    }


def make_app(collector: LusiferCollector) -> WsgiApp:
    """The WSGI application serving the three paths."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/scale":
            try:
                return _json(start_response, "200 OK", scale_figures(collector))
            except LookupError as err:
                return _json(start_response, "503 Service Unavailable", {"error": str(err)})
        if path == "/ready":
            # Ready when the database can be read: without it every figure is missing.
            snap = collector.snapshot()
            if "database" in snap.errors:
                return _text(start_response, "503 Service Unavailable", snap.errors["database"])
            return _text(start_response, "200 OK", "ready")
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok")
        return _text(start_response, "404 Not Found", "try /metrics, /scale or /ready")

    return app


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = f"{body}\n".encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    )
    return [data]


def serve(collector: LusiferCollector, host: str, port: int) -> WSGIServer:
    """Bind the server (an OSError names a port in use); the caller runs serve_forever."""
    return make_server(host, port, make_app(collector), ThreadingWSGIServer, _QuietHandler)


def serve_in_thread(server: WSGIServer) -> threading.Thread:
    """Run ``server`` in a daemon thread (tests, and the command's signal handling)."""
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return thread
