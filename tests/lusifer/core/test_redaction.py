"""The configured key never reaches a stored or printed text, even when a provider echoes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from lusifer.core.redaction import MASK, redact
from lusifer.core.settings import get_settings
from lusifer.llm import classify_status
from lusifer.store.engines import create_tables, get_engine, session_scope, upsert
from lusifer.store.jobs import finish_job
from lusifer.store.tables import Job, JobState

KEY = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LUSIFER_LLM_API_KEY", KEY)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_redact_masks_the_key_and_leaves_other_text() -> None:
    assert redact(f"Incorrect API key provided: {KEY}.") == f"Incorrect API key provided: {MASK}."
    assert redact("nothing secret here") == "nothing secret here"


def test_a_400_that_echoes_the_key_names_no_key() -> None:
    error = classify_status(400, None, f"bad request for key {KEY}", "m", "http://x/v1")
    assert KEY not in str(error) and MASK in str(error)


def test_a_stored_job_error_names_no_key(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'r.db'}")
    create_tables(engine)
    row = {
        "id": "r/u1/1/profile",
        "run_id": "r",
        "fold": "u1",
        "user_id": 1,
        "kind": "profile",
        "chunk": 0,
        "state": JobState.RUNNING,
        "inputs_json": "{}",
    }
    with session_scope(engine) as session:
        upsert(session, Job, [row], keys=["id"])
    finish_job(engine, "r/u1/1/profile", JobState.FAILED, error=f"refused: {KEY}")
    with Session(engine) as session:
        job = session.get(Job, "r/u1/1/profile")
    assert job is not None and job.error == f"refused: {MASK}"
