"""`lusifer import-sqlite`: an earlier version's SQLite file brought into today's database,
once however often it is run, and the file left as it was; bad files are one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from lusifer.store.engines import get_engine
from lusifer.store.run_states import job_counts
from lusifer.store.tables import Job, JobKind, JobState, Run, SimulatedRating
from tests.coordinator.eval_fixtures import RUN_ID, store_run
from tests.integration.services import postgres_schema

pytestmark = pytest.mark.integration
LUSIFER = str(Path(sys.executable).parent / "lusifer")


def _lusifer(args: list[str], cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    env.update(LUSIFER_DATABASE_URL=database_url, COLUMNS="200")
    return subprocess.run(
        [LUSIFER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _counts(url: str) -> tuple[int, int]:
    with Session(get_engine(url)) as session:
        runs = session.exec(select(func.count()).select_from(Run)).one()
        rated = session.exec(select(func.count()).select_from(SimulatedRating)).one()
    return int(runs), int(rated)


def _add_jobs(url: str) -> None:
    with Session(get_engine(url)) as session:
        for user, state in ((1, JobState.DONE), (2, JobState.DONE), (3, JobState.FAILED)):
            session.add(
                Job(
                    id=f"{RUN_ID}/u1/{user}/profile",
                    run_id=RUN_ID,
                    fold="u1",
                    user_id=user,
                    kind=JobKind.PROFILE,
                    state=state,
                    inputs_json="{}",
                )
            )
        session.commit()


def test_runs_of_a_sqlite_file_are_imported_once(data_dir: Path, tmp_path: Path) -> None:
    store_run(data_dir, tmp_path)
    source = tmp_path / "eval.db"
    _add_jobs(f"sqlite:///{source}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    expected = _counts(f"sqlite:///{source}")
    with postgres_schema("lusifer_import") as url:
        first = _lusifer(["import-sqlite", str(source)], tmp_path, url)
        assert first.returncode == 0, first.stderr
        assert "1 new runs" in first.stdout
        assert _counts(url) == expected
        again = _lusifer(["import-sqlite", str(source)], tmp_path, url)
        assert again.returncode == 0, again.stderr
        assert "0 new runs" in again.stdout
        assert _counts(url) == expected  # nothing twice
        # The target's own triggers counted the jobs as they came in: once each.
        assert job_counts(get_engine(url), RUN_ID) == {"profile": {"done": 2, "failed": 1}}
        listed = _lusifer(["runs"], tmp_path, url)
        assert RUN_ID in listed.stdout
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest  # the file is untouched


@pytest.mark.parametrize(
    ("content", "phrase"),
    [(None, "is not a file"), (b"not a database at all" * 100, "not a SQLite database")],
    ids=["missing", "garbage"],
)
def test_a_bad_file_is_one_line(content: bytes | None, phrase: str, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    if content is not None:
        path.write_bytes(content)
    with postgres_schema("lusifer_import") as url:
        result = _lusifer(["import-sqlite", str(path)], tmp_path, url)
    assert result.returncode == 1
    assert phrase in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
