"""`lusifer metrics` as a process of its own, and its scrapes parsed, for integration tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.services import VENV_BIN, free_port

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    """One scrape: every sample by name and labels, and how long the scrape took."""

    samples: dict[tuple[str, Labels], float]
    seconds: float

    def value(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels, or None."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= set(ls))

    def series(self, name: str) -> dict[Labels, float]:
        """Every sample of ``name`` by its labels."""
        return {ls: v for (n, ls), v in self.samples.items() if n == name}


def parse(text: str, seconds: float = 0.0) -> Scrape:
    """The samples of a Prometheus text exposition."""
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(samples, seconds)


@dataclass
class MetricsServer:
    """A running `lusifer metrics` process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def scrape(self, timeout: float = 30.0) -> Scrape:
        """GET /metrics and parse it (any status but 200 fails the test)."""
        start = time.monotonic()
        answer = httpx.get(f"{self.url}/metrics", timeout=timeout)
        assert answer.status_code == 200, answer.text
        return parse(answer.text, time.monotonic() - start)

    def get(self, path: str, timeout: float = 30.0) -> httpx.Response:
        """GET another path (/scale, /ready, /healthz)."""
        return httpx.get(f"{self.url}{path}", timeout=timeout)

    def scale(self) -> dict[str, Any]:
        """The /scale JSON."""
        answer = self.get("/scale")
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data


@contextmanager
def metrics_server(env: dict[str, str], log_dir: Path, *options: str) -> Iterator[MetricsServer]:
    """Start `lusifer metrics` on a free port and wait until it answers /healthz."""
    port = free_port()
    log = log_dir / f"metrics-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(VENV_BIN / "lusifer"), "metrics", "--port", str(port), *options],
            env={**env, "COLUMNS": "200"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = MetricsServer(f"http://127.0.0.1:{port}", process, log)
    try:
        # Generous: the command imports the whole CLI, which takes seconds on a busy machine.
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if server.get("/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"metrics did not start: {log.read_text()}"
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
