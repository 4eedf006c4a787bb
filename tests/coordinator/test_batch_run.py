"""The Batch API driver on SQLite with an in-process batch endpoint: rounds, splitting,
refused and failing lines, and a batch adopted after a crash."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from coordinator.batch_run import drive_batch_run
from coordinator.plan import plan_run, store_plan
from lusifer.batchapi.client import BatchClient, BatchInfo
from lusifer.core.config import BatchConfig, RunConfig
from lusifer.data import Dataset, Fold, Item, Rating, User
from lusifer.method.prompts import load_prompt_set
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import Job, JobState, LLMBatch, LLMCall, SimulatedRating
from lusifer.stub.answers import answer_for, completion, parse_chat_request

# Given a line's body, None for a good answer or (status, message) for an error line.
Failure = Callable[[dict[str, Any]], tuple[int, str] | None]


def _dataset() -> Dataset:
    items = {i: Item(i, f"Movie {i}", 1990 + i, ("Drama",), None) for i in range(1, 31)}
    train, test = [], []
    for user in (1, 2):
        train += [Rating(user, i, 1 + (i + user) % 5, 1000 + i) for i in range(1, 26)]
        test += [Rating(user, i, 1 + (i * user) % 5, 2000 + i) for i in range(26, 31)]
    return Dataset(
        name="tiny",
        users={1: User(1, 30, "F", "writer"), 2: User(2, 40, "M", "doctor")},
        items=items,
        folds={"f1": Fold.of("f1", train, test)},
        fingerprint="tiny-batch",
    )


class InProcessBatches(BatchClient):
    """Answers batches at once with the stub's answers; ``failure`` picks error lines."""

    def __init__(
        self, failure: Failure = lambda body: None, first_ends: tuple[str, str] | None = None
    ) -> None:
        super().__init__("http://in-process/v1", None)
        self.failure = failure
        # (status, error code) the first batch ends with, answering nothing.
        self.first_ends = first_ends
        self.submitted: list[list[dict[str, Any]]] = []
        self.batches: dict[str, BatchInfo] = {}
        self.files: dict[str, str] = {}

    def submit(self, content: bytes, metadata: dict[str, str], window: str) -> BatchInfo:
        lines = [json.loads(line) for line in content.splitlines()]
        self.submitted.append(lines)
        outputs, errors = [], []
        for line in lines:
            failed = self.failure(line["body"])
            if failed is None:
                request = parse_chat_request(line["body"])
                body = completion(request, json.dumps(answer_for(request)), "c", 0)
                outputs.append(
                    {"custom_id": line["custom_id"], "response": {"status_code": 200, "body": body}}
                )
            else:
                status, message = failed
                body = {"error": {"message": message}}
                errors.append(
                    {
                        "custom_id": line["custom_id"],
                        "response": {"status_code": status, "body": body},
                    }
                )
        n = len(self.batches)
        for name, found in (("out", outputs), ("err", errors)):
            self.files[f"{name}-{n}"] = "\n".join(json.dumps(x) for x in found)
        info = BatchInfo(
            id=f"batch-{n}",
            status="completed",
            input_file_id=f"in-{n}",
            output_file_id=f"out-{n}",
            error_file_id=f"err-{n}",
            total=len(lines),
            completed=len(outputs),
            failed=len(errors),
            metadata=metadata,
        )
        if n == 0 and self.first_ends is not None:
            status, code = self.first_ends
            info = BatchInfo(
                id=info.id,
                status=status,
                input_file_id=info.input_file_id,
                total=len(lines),
                metadata=metadata,
                errors=(f"{code}: the whole batch",),
                error_codes=(code,),
            )
        self.batches[info.id] = info
        return info

    def find(self, metadata: dict[str, str]) -> BatchInfo | None:
        return next((b for b in self.batches.values() if b.metadata == metadata), None)

    def retrieve(self, batch_id: str) -> BatchInfo:
        return self.batches[batch_id]

    def download(self, file_id: str) -> str:
        return self.files[file_id]


def _planned(path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{path}")
    create_tables(engine)
    config = RunConfig.model_validate(
        {
            "folds": ("f1",),
            "profile_history": 20,
            "max_reask": 1,
            "llm": {"base_url": "http://x/v1", "model": "stub-model", "price_prompt_per_mtok": 1.0},
            "batch": {},
        }
    )
    dataset = _dataset()
    store_plan(engine, plan_run("r", config, dataset, load_prompt_set("lusifer")), dataset)
    return engine


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return _planned(tmp_path / "batch.db")


def drive(engine: Engine, client: BatchClient, **config: Any) -> None:
    drive_batch_run(
        engine, client, "r", BatchConfig(poll_s=0.01, **config), Console(quiet=True), max_attempts=3
    )


def states(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        return {job.id: job.state for job in session.exec(select(Job)).all()}


def rounds(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return sorted(b.round for b in session.exec(select(LLMBatch)).all())


def test_two_profile_steps_and_the_ratings_take_three_rounds(engine: Engine) -> None:
    client = InProcessBatches()
    drive(engine, client)
    assert set(states(engine).values()) == {JobState.DONE}
    assert rounds(engine) == [0, 1, 2]
    assert [len(lines) for lines in client.submitted] == [2, 2, 2]  # 2 users, one chunk each
    with Session(engine) as session:
        missing = session.exec(
            select(func.count()).where(SimulatedRating.rating == None)  # noqa: E711
        ).one()
        calls = session.exec(select(LLMCall)).all()
    assert missing == 0
    # Billed at half the configured price (1 USD per million prompt tokens).
    assert all(c.cost_usd == pytest.approx(c.prompt_tokens * 0.5e-6) for c in calls)


def test_a_round_past_the_line_limit_is_split(engine: Engine) -> None:
    drive(engine, InProcessBatches(), max_lines=1)
    assert rounds(engine) == [0, 0, 1, 1, 2, 2]
    assert set(states(engine).values()) == {JobState.DONE}


def _user_2_profile(body: dict[str, Any]) -> bool:
    text = " ".join(m["content"] for m in body["messages"])
    return "doctor" in text and body["response_format"]["json_schema"]["name"] == "profile"


def test_a_refused_line_fails_its_job_and_the_run_goes_on(engine: Engine) -> None:
    drive(engine, InProcessBatches(lambda b: (400, "bad request") if _user_2_profile(b) else None))
    final = states(engine)
    assert final["r/f1/2/profile"] == JobState.FAILED
    assert final["r/f1/2/rating/0"] == JobState.FAILED  # its profile failed
    assert final["r/f1/1/profile"] == final["r/f1/1/rating/0"] == JobState.DONE
    with Session(engine) as session:
        job = session.get(Job, "r/f1/2/profile")
    assert job is not None and "refused" in (job.error or "") and "bad request" in (job.error or "")


def test_transient_lines_are_submitted_again_until_the_attempts_run_out(engine: Engine) -> None:
    client = InProcessBatches(lambda b: (503, "overloaded") if _user_2_profile(b) else None)
    drive(engine, client)
    final = states(engine)
    assert final["r/f1/2/profile"] == JobState.FAILED
    assert final["r/f1/1/rating/0"] == JobState.DONE
    resubmitted = [
        line["custom_id"]
        for lines in client.submitted
        for line in lines
        if _user_2_profile(line["body"])
    ]
    assert len(resubmitted) == 3 and len(set(resubmitted)) == 1  # max_attempts
    with Session(engine) as session:
        job = session.get(Job, "r/f1/2/profile")
    assert job is not None and "gave up after 3 batch attempts" in (job.error or "")


def test_a_batch_submitted_before_a_crash_is_adopted_not_paid_again(tmp_path: Path) -> None:
    first = InProcessBatches()
    drive(_planned(tmp_path / "first.db"), first)
    # The same run again, where the provider already holds round 0: the coordinator died
    # after the provider accepted it and before the database stored it.
    again = InProcessBatches()
    again.batches["batch-0"] = first.batches["batch-0"]
    again.files.update({k: v for k, v in first.files.items() if k.endswith("-0")})
    engine = _planned(tmp_path / "again.db")
    drive(engine, again)
    assert len(again.submitted) == 2  # rounds 1 and 2 only
    assert rounds(engine) == [0, 1, 2]
    assert set(states(engine).values()) == {JobState.DONE}


@pytest.mark.parametrize(
    ("status", "code"),
    [("expired", "batch_expired"), ("cancelled", ""), ("failed", "token_limit_exceeded")],
)
def test_a_batch_that_answered_nothing_for_a_passing_reason_is_submitted_again(
    engine: Engine, status: str, code: str
) -> None:
    client = InProcessBatches(first_ends=(status, code))
    drive(engine, client)
    assert rounds(engine) == [0, 1, 2, 3]
    assert client.submitted[0] == client.submitted[1]
    assert set(states(engine).values()) == {JobState.DONE}


def test_a_batch_refused_as_invalid_fails_its_jobs(engine: Engine) -> None:
    drive(engine, InProcessBatches(first_ends=("failed", "invalid_request")))
    assert rounds(engine) == [0]
    assert set(states(engine).values()) == {JobState.FAILED}
    with Session(engine) as session:
        job = session.get(Job, "r/f1/1/profile")
    assert job is not None and "invalid_request: the whole batch" in (job.error or "")
