"""The environment's rows: specs, episodes, step requests and their results, profile updates.

The database is the truth: a step is a request row that an executor (a thread here, or a Celery
worker elsewhere) completes in place; the environment reads the result back from the row.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from lusifer.core.errors import (
    ConfigurationError,
    DataError,
    LusiferError,
    OutputValidationError,
    PermanentLLMError,
    ServiceError,
    TransientLLMError,
)
from lusifer.core.redaction import redact
from lusifer.data import Dataset
from lusifer.env.config import EnvConfig
from lusifer.method.prompts import PromptSet
from lusifer.store.engines import session_scope, upsert
from lusifer.store.runs import prompt_set_to_json, store_dataset_texts
from lusifer.store.tables import (
    EnvEpisode,
    EnvProfileUpdate,
    EnvSpec,
    EnvStepRequest,
    JobState,
    utcnow,
)

RESET = "reset"
STEP = "step"

_KINDS: tuple[tuple[type[LusiferError], str], ...] = (
    (TransientLLMError, "transient"),
    (PermanentLLMError, "permanent"),
    (OutputValidationError, "output"),
    (ConfigurationError, "configuration"),
    (DataError, "data"),
    (ServiceError, "service"),
)


def request_id(episode_id: str, step: int) -> str:
    """The id of an episode's step request (step 0 is the reset)."""
    return f"{episode_id}/{step}"


def register_spec(engine: Engine, config: EnvConfig, prompts: PromptSet, dataset: Dataset) -> str:
    """Store an environment and the texts its workers need; its id is its content hash."""
    config_json = config.model_dump_json()
    digest = hashlib.sha256(
        f"{config_json}\0{prompts.content_hash}\0{dataset.fingerprint}".encode()
    ).hexdigest()
    spec_id = f"env-{digest[:16]}"
    fingerprint = dataset.fingerprint
    with session_scope(engine) as session:
        upsert(
            session,
            EnvSpec,
            [
                {
                    "id": spec_id,
                    "config_json": config_json,
                    "prompts_json": prompt_set_to_json(prompts),
                    "dataset_fingerprint": fingerprint,
                }
            ],
            keys=["id"],
        )
        store_dataset_texts(session, dataset)
    return spec_id


@dataclass(frozen=True)
class NewRequest:
    """A request about to be stored (with its episode, for a reset)."""

    request: EnvStepRequest
    episode: EnvEpisode | None = None

    @property
    def id(self) -> str:
        """The request's id."""
        return self.request.id


def reset_request(
    episode_id: str, spec_id: str, user_id: int, history: Sequence[tuple[int, int]]
) -> NewRequest:
    """A new episode and its reset request (step 0)."""
    episode = EnvEpisode(
        id=episode_id,
        spec_id=spec_id,
        user_id=user_id,
        history_json=json.dumps([list(pair) for pair in history]),
    )
    request = EnvStepRequest(
        id=request_id(episode_id, 0), episode_id=episode_id, step=0, kind=RESET
    )
    return NewRequest(request, episode)


def step_request(episode_id: str, step: int, slate: Sequence[int]) -> NewRequest:
    """The request of an episode's step ``step`` (>= 1) rating ``slate`` (item ids)."""
    return NewRequest(
        EnvStepRequest(
            id=request_id(episode_id, step),
            episode_id=episode_id,
            step=step,
            kind=STEP,
            slate_json=json.dumps(list(slate)),
        )
    )


def add_requests(engine: Engine, requests: Sequence[NewRequest]) -> list[str]:
    """Store requests (and their episodes) in one transaction; return their ids."""
    with session_scope(engine) as session:
        for new in requests:
            if new.episode is not None:
                session.add(new.episode)
        session.flush()  # episodes before the requests that name them
        for new in requests:
            session.add(new.request)
    return [new.id for new in requests]


def create_episode(
    engine: Engine, episode_id: str, spec_id: str, user_id: int, history: Sequence[tuple[int, int]]
) -> str:
    """Store an episode and its reset request; return the request's id."""
    return add_requests(engine, [reset_request(episode_id, spec_id, user_id, history)])[0]


def create_step(engine: Engine, episode_id: str, step: int, slate: Sequence[int]) -> str:
    """Store the request of an episode's step ``step`` rating ``slate`` (item ids)."""
    return add_requests(engine, [step_request(episode_id, step, slate)])[0]


def set_state(engine: Engine, ids: Sequence[str], state: str) -> None:
    """Move unfinished requests to ``state`` (queued when sent, running when taken)."""
    with session_scope(engine) as session:
        session.execute(
            update(EnvStepRequest)
            .where(
                col(EnvStepRequest.id).in_(list(ids)),
                col(EnvStepRequest.state).in_(JobState.UNFINISHED),
            )
            .values(state=state, updated_at=utcnow())
        )


def error_kind(err: Exception) -> str:
    """The kind of a failure, stored so the environment re-raises the same error class."""
    for cls, kind in _KINDS:
        if isinstance(err, cls):
            return kind
    return "error"


def raise_stored(kind: str | None, message: str) -> None:
    """Raise the error a failed request stored."""
    for cls, name in _KINDS:
        if name == kind:
            raise cls(message)
    raise LusiferError(message)


def fail_request(engine: Engine, rid: str, err: Exception) -> None:
    """Store a request as failed, with the error and its kind."""
    raw = err.raw_text if isinstance(err, OutputValidationError) else None
    with session_scope(engine) as session:
        session.execute(
            update(EnvStepRequest)
            .where(col(EnvStepRequest.id) == rid)
            .values(
                state=JobState.FAILED,
                error=redact(str(err) or type(err).__name__),
                error_kind=error_kind(err),
                raw_output=raw,
                updated_at=utcnow(),
            )
        )


@dataclass(frozen=True)
class ProfileVersion:
    """One profile of an episode: after which step, from where, and what changed."""

    step: int
    source: str
    profile: str
    explanation: str
    call_key: str
    item_ids: tuple[int, ...]

    def as_info(self) -> dict[str, object]:
        """A fresh dict for ``info`` (never shared between calls)."""
        return {
            "step": self.step,
            "source": self.source,
            "profile": self.profile,
            "explanation": self.explanation,
            "call_key": self.call_key,
            "item_ids": list(self.item_ids),
        }


@dataclass(frozen=True)
class RequestResult:
    """What a finished request produced."""

    state: str
    ratings: dict[int, int]
    missing: tuple[int, ...]
    reasks: int
    error: str | None
    error_kind: str | None
    profile: ProfileVersion | None  # the profile stored at this step, if any

    def raise_if_failed(self, rid: str) -> None:
        """Raise the stored error of a failed request."""
        if self.state != JobState.DONE:
            raise_stored(self.error_kind, f"environment step {rid} failed: {self.error}")


def _version(row: EnvProfileUpdate) -> ProfileVersion:
    return ProfileVersion(
        step=row.step,
        source=row.source,
        profile=row.profile,
        explanation=row.explanation,
        call_key=row.call_key,
        item_ids=tuple(json.loads(row.item_ids_json)),
    )


def load_results(engine: Engine, ids: Sequence[str]) -> dict[str, RequestResult]:
    """The results of requests, with the profile each stored (two queries for any number)."""
    with Session(engine) as session:
        rows = session.exec(
            select(EnvStepRequest).where(col(EnvStepRequest.id).in_(list(ids)))
        ).all()
        episodes = {row.episode_id for row in rows}
        updates = session.exec(
            select(EnvProfileUpdate).where(col(EnvProfileUpdate.episode_id).in_(episodes))
        ).all()
    by_key = {(u.episode_id, u.step): u for u in updates}
    results: dict[str, RequestResult] = {}
    for row in rows:
        stored = by_key.get((row.episode_id, row.step))
        ratings = json.loads(row.ratings_json) if row.ratings_json else {}
        results[row.id] = RequestResult(
            state=row.state,
            ratings={int(k): int(v) for k, v in ratings.items()},
            missing=tuple(json.loads(row.missing_json)) if row.missing_json else (),
            reasks=row.reasks,
            error=row.error,
            error_kind=row.error_kind,
            profile=_version(stored) if stored is not None else None,
        )
    missing = [rid for rid in ids if rid not in results]
    if missing:
        raise DataError(f"environment requests {missing[:5]} are not in the database")
    return results


def profile_history(engine: Engine, episode_id: str) -> list[ProfileVersion]:
    """Every profile of an episode, in step order."""
    with Session(engine) as session:
        rows = session.exec(
            select(EnvProfileUpdate)
            .where(EnvProfileUpdate.episode_id == episode_id)
            .order_by(col(EnvProfileUpdate.step))
        ).all()
    return [_version(row) for row in rows]


def unfinished(engine: Engine, ids: Iterable[str]) -> list[str]:
    """The requests among ``ids`` that are neither done nor failed."""
    return _in_states(engine, ids, JobState.UNFINISHED)


def _in_states(engine: Engine, ids: Iterable[str], states: Sequence[str]) -> list[str]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(EnvStepRequest.id).where(
                    col(EnvStepRequest.id).in_(list(ids)),
                    col(EnvStepRequest.state).in_(list(states)),
                )
            ).all()
        )


def wait_for(engine: Engine, ids: Sequence[str], timeout_s: float, where: str) -> None:
    """Poll the database until every request is finished; fail after ``timeout_s``."""
    left = wait_some(engine, ids, timeout_s)
    if left:
        raise ServiceError(
            f"{len(left)} environment steps (e.g. {left[0]}) were not finished within "
            f"{timeout_s:.0f} s; check that workers are running on {where}"
        )


def wait_some(engine: Engine, ids: Sequence[str], timeout_s: float) -> list[str]:
    """Poll until every request is finished or ``timeout_s`` passed; what is left."""
    deadline = time.monotonic() + timeout_s
    pause = 0.01
    left = list(ids)
    while left:
        left = unfinished(engine, left)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(pause)
        pause = min(0.05, pause * 1.5)
    return left


def still_queued(engine: Engine, ids: Sequence[str]) -> list[str]:
    """The requests among ``ids`` that no worker has taken (their message may be lost)."""
    return _in_states(engine, ids, [JobState.QUEUED])
