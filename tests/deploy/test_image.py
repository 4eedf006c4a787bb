"""The container image's files: the Dockerfile, the entrypoint, the build context."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), as (KEYWORD, arguments)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_entrypoint_is_valid_bash_and_executable() -> None:
    entrypoint = DEPLOY / "entrypoint.sh"
    subprocess.run(["bash", "-n", str(entrypoint)], check=True, timeout=10)
    assert os.access(entrypoint, os.X_OK)
    text = entrypoint.read_text()
    assert "set -euo pipefail" in text
    assert '"$(dirname "$0")/wait_for.py"' in text
    assert re.search(r'^exec "\$@"$', text, flags=re.MULTILINE)


def test_entrypoint_skips_the_wait_and_execs_the_command() -> None:
    env = {"PATH": os.environ["PATH"], "LUSIFER_SKIP_WAIT": "1",
           "LUSIFER_BROKER_URL": "redis://127.0.0.1:1/0"}  # fmt: skip
    result = subprocess.run(
        [str(DEPLOY / "entrypoint.sh"), "sh", "-c", 'echo "pid=$$"; exit 7'],
        env=env, capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert result.returncode == 7
    assert result.stdout.startswith("pid=")
    assert "wait_for" not in result.stderr


def test_dockerfile_runs_as_a_user_from_python_311_through_the_entrypoint() -> None:
    steps = instructions()
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert froms and all(f.startswith("python:3.11") for f in froms), froms
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    entrypoints = [args for keyword, args in steps if keyword == "ENTRYPOINT"]
    assert entrypoints == ['["/app/deploy/entrypoint.sh"]']
    copied = " ".join(args for keyword, args in steps if keyword == "COPY")
    assert "deploy/entrypoint.sh" in copied and "deploy/wait_for.py" in copied
    runs = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert "pip install ." in runs and "[local]" not in runs
    env = " ".join(args for keyword, args in steps if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env


def test_build_context_leaves_out_local_state() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # An allowlist: everything is excluded, then the project's own files are let back in.
    assert patterns[0] == "*"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    assert {"pyproject.toml", "README.md", "lusifer", "coordinator", "workers", "prompts",
            "deploy"} <= allowed  # fmt: skip
    assert not allowed & {".env", ".venv", ".git", "lusifer-runs", "tests"}
