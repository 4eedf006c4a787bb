"""Which libraries a fresh interpreter loads to start a `lusifer` command or a worker.

Start-up is pinned by what is imported, not by how long it takes (the machines that run the
tests are shared and noisy): each heavy library below costs a few tenths of a second to a
second of CPU to every process that imports it, and the suite starts hundreds of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Needed only by what makes or reads frames, fits baselines, plots, trains agents, or talks to
# the Batch API: never by a process merely starting.
HEAVY = (
    "gymnasium",
    "matplotlib",
    "openai",
    "pandas",
    "pyarrow",
    "scipy",
    "sklearn",
    "stable_baselines3",
    "surprise",
    "torch",
)
# The command line loads the database, the queue and the LLM's transports in the command that
# uses them, once its options and data are found good: `--help` and a refused command never do.
DEFERRED_BY_THE_CLI = (
    *HEAVY,
    "aiohttp",
    "alembic",
    "celery",
    "httpx",
    "redis",
    "sqlalchemy",
    "sqlmodel",
)

# Written at exit, whatever ends the program (typer ends with SystemExit).
_RECORD = (
    "import atexit, os, sys\n"
    "atexit.register(lambda: open(os.environ['LOADED_MODULES'], 'w')"
    ".write('\\n'.join(sorted(sys.modules))))\n"
)


@dataclass(frozen=True)
class Started:
    """How a fresh interpreter ended, and the top-level packages it had imported."""

    returncode: int
    stdout: str
    stderr: str
    packages: frozenset[str]

    def loaded(self, names: tuple[str, ...]) -> list[str]:
        """Those of ``names`` that were imported."""
        return [name for name in names if name in self.packages]


def start(code: str, tmp_path: Path, **env: str) -> Started:
    """Run ``code`` in a fresh interpreter (no LUSIFER_ settings but ``env``)."""
    record = tmp_path / "loaded-modules.txt"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    clean.update(env, LOADED_MODULES=str(record), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", _RECORD + code],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
        timeout=120,
    )
    modules = record.read_text().split() if record.is_file() else []
    return Started(
        done.returncode,
        done.stdout,
        done.stderr,
        frozenset(name.split(".")[0] for name in modules),
    )


def lusifer_command(*args: str) -> str:
    """The code of the `lusifer` entry point run with ``args``."""
    argv = ["lusifer", *args]
    return f"import sys\nfrom coordinator.cli import main\nsys.argv = {argv!r}\nmain()\n"
