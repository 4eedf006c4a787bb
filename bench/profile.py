"""Where the time of a run goes: py-spy samples of the worker processes (and the stub),
grouped by the library that was running (the innermost frame that belongs to a known one).

py-spy is optional (`pip install py-spy`); without it the figure is measured unprofiled.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.report import Table, print_table

# Matched against a frame's file path, innermost frame first; the first hit names the sample.
CATEGORIES = (
    (
        "database (SQLAlchemy, psycopg, asyncpg)",
        re.compile(r"(?:^|/)(sqlalchemy|sqlmodel|psycopg\w*|asyncpg)/"),
    ),
    ("queue (Celery, kombu, redis)", re.compile(r"(?:^|/)(celery|kombu|redis|billiard|vine)/")),
    (
        "LLM client (aiohttp, urllib3, openai)",
        re.compile(r"(?:^|/)(aiohttp|yarl|multidict|urllib3|openai|httpx|httpcore|anyio|h11)/"),
    ),
    ("validation (pydantic)", re.compile(r"(?:^|/)pydantic(_core)?/")),
    ("prompts (Jinja2)", re.compile(r"(?:^|/)jinja2/")),
    ("retries (tenacity)", re.compile(r"(?:^|/)tenacity/")),
    ("stub server", re.compile(r"lusifer/stub/|(?:^|/)http/server|socketserver")),
    ("lusifer code", re.compile(r"(?:^|/)(lusifer|workers|coordinator)/")),
    ("json, hashing, logging", re.compile(r"(?:^|/)(json/|hashlib|logging/|uuid)")),
    ("event loop (asyncio)", re.compile(r"(?:^|/)asyncio/")),
)
_FRAME = re.compile(r"\((?P<file>[^():]+)(?::\d+)?\)\s*$")


def classify(stack: str) -> str:
    """The category of one collapsed stack (frames separated by ';', root first)."""
    for frame in reversed(stack.split(";")):
        match = _FRAME.search(frame)
        if match is None:
            continue
        for name, pattern in CATEGORIES:
            if pattern.search(match["file"]):
                return name
    return "other (interpreter, socket I/O)"


def summarise(raw_files: list[Path]) -> Counter[str]:
    """Samples per category over py-spy `--format raw` outputs."""
    counts: Counter[str] = Counter()
    for path in raw_files:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, number = line.rpartition(" ")
            if stack and number.isdigit():
                counts[classify(stack)] += int(number)
    return counts


@contextmanager
def profiled(pids: dict[str, int], out_dir: Path, rate: int = 97) -> Iterator[list[Path]]:
    """Sample each process (only threads holding the GIL: CPU, not waiting) while inside."""
    beside = Path(sys.executable).parent / "py-spy"
    exe = str(beside) if beside.is_file() else shutil.which("py-spy")
    outputs: list[Path] = []
    samplers: list[subprocess.Popen[bytes]] = []
    if exe is not None:
        for name, pid in pids.items():
            out = out_dir / f"{name}.raw"
            outputs.append(out)
            samplers.append(
                subprocess.Popen(
                    [
                        *(exe, "record", "--pid", str(pid), "--format", "raw", "--gil"),
                        *("--rate", str(rate), "--nonblocking", "--output", str(out)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    try:
        yield outputs
    finally:
        for sampler in samplers:
            sampler.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for sampler in samplers:
            try:
                sampler.wait(30)
            except subprocess.TimeoutExpired:
                sampler.kill()


def print_profile(counts: Counter[str], title: str) -> None:
    """Share of CPU samples per category."""
    total = sum(counts.values())
    table = Table(title=title)
    table.add_column("where")
    table.add_column("samples", justify="right")
    table.add_column("share", justify="right")
    for name, n in counts.most_common():
        table.add_row(name, str(n), f"{100 * n / total:.1f} %" if total else "–")
    print_table(table)
