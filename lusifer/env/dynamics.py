"""Running a step request: how the simulated user answers and how their profile evolves.

``execute_env_request`` is the one function both executors run, a thread in this process or a
Celery worker: it reads everything from the database (the request, its episode, the episode's
earlier results) and writes its result back, idempotently. A request that already finished is
left alone; one run twice writes the same rows (at temperature 0, and the call cache answers a
repeated call identically at any temperature).

- A reset (step 0) stores the initial profile: the final profile of ``config.run_id``'s phase 1
  for the user when there is one, else one built with ``build_profile`` from the user's last
  ``profile_history`` training ratings in batches of ``profile_batch``.
- Step ``s`` has the user rate the slate with ``rate_items`` (the profile after step ``s - 1``,
  the last ``recent_k`` ratings of history and episode); when ``s % update_every == 0`` the
  profile is updated with ``profile_step`` from the ratings of steps ``s - update_every + 1 ..
  s`` and stored as the profile after step ``s``, with the LLM's explanation. An update the LLM
  botches keeps the previous profile (source ``kept``), as phase 1 does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from lusifer.core.config import LLMConfig
from lusifer.core.errors import DataError, OutputValidationError
from lusifer.env.config import EnvConfig, parse_env_config
from lusifer.env.store import RESET, fail_request
from lusifer.llm import ChatModel
from lusifer.method.dialogues import (
    ItemToRate,
    RatedItem,
    build_profile,
    profile_reasks,
    profile_step,
    rate_items,
)
from lusifer.method.history import history_batches
from lusifer.method.prompts import PromptSet
from lusifer.method.schemas import ProfileAnswer
from lusifer.store.call_cache import CallContext, RecordedModel
from lusifer.store.engines import session_scope, upsert
from lusifer.store.runs import prompt_set_from_json, read_item_texts
from lusifer.store.tables import (
    EnvEpisode,
    EnvProfileUpdate,
    EnvSpec,
    EnvStepRequest,
    JobState,
    ProfileStep,
    UserText,
    utcnow,
)

ModelFor = Callable[[LLMConfig], ChatModel]


@dataclass(frozen=True)
class EnvContext:
    """What every request of an environment needs, loaded once per process."""

    spec_id: str
    config: EnvConfig
    prompts: PromptSet
    item_info: Mapping[int, str]
    user_info: dict[int, str]


_context_lock = threading.Lock()


def load_env_context(engine: Engine, spec_id: str) -> EnvContext:
    """The environment's context (cached: a spec never changes, its id is its content)."""
    # One loader at a time: the first batch of requests would otherwise load it once per thread.
    with _context_lock:
        return _load_env_context(engine, spec_id)


@lru_cache(maxsize=16)
def _load_env_context(engine: Engine, spec_id: str) -> EnvContext:
    with Session(engine) as session:
        spec = session.get(EnvSpec, spec_id)
        if spec is None:
            raise DataError(f"environment {spec_id!r} is not in the database")
        config = parse_env_config(json.loads(spec.config_json))
        users = session.exec(
            select(UserText.user_id, UserText.info).where(
                UserText.dataset_fingerprint == spec.dataset_fingerprint
            )
        ).all()
        return EnvContext(
            spec_id=spec_id,
            config=config,
            prompts=prompt_set_from_json(spec.prompts_json),
            item_info=read_item_texts(session, spec.dataset_fingerprint, config.overview_chars),
            user_info=dict(users),
        )


def execute_env_request(engine: Engine, rid: str, model_for: ModelFor) -> str:
    """Run one reset or step request and store its result; return its final state.

    LLM errors (transient, permanent) propagate for the caller to retry or fail the request;
    a request that cannot succeed for its data or the LLM's answers is stored as failed.
    """
    with Session(engine) as session:
        request = session.get(EnvStepRequest, rid)
        if request is None:
            raise DataError(f"environment request {rid!r} is not in the database")
        if request.state not in JobState.UNFINISHED:
            return request.state
        episode = session.get(EnvEpisode, request.episode_id)
        if episode is None:
            raise DataError(f"episode {request.episode_id!r} is not in the database")
    ctx = load_env_context(engine, episode.spec_id)
    recorded = RecordedModel(
        engine,
        model_for(ctx.config.llm),
        ctx.config.llm,
        CallContext(ctx.spec_id, rid, ctx.config.fold),
    )
    try:
        if request.kind == RESET:
            _reset(engine, ctx, recorded, request, episode)
        else:
            _step(engine, ctx, recorded, request, episode)
    except (DataError, OutputValidationError) as err:
        fail_request(engine, rid, err)
        return JobState.FAILED
    return JobState.DONE


def _history(episode: EnvEpisode) -> list[tuple[int, int]]:
    return [(int(i), int(r)) for i, r in json.loads(episode.history_json)]


def _store(
    engine: Engine,
    request: EnvStepRequest,
    profile: dict[str, object] | None,
    **result: object,
) -> None:
    # The profile row and the request's state change in one transaction: a request seen
    # done always has its profile.
    with session_scope(engine) as session:
        if profile is not None:
            upsert(
                session,
                EnvProfileUpdate,
                [{"episode_id": request.episode_id, "step": request.step, **profile}],
                keys=["episode_id", "step"],
                update=["source", "item_ids_json", "profile", "explanation", "call_key"],
            )
        session.execute(
            update(EnvStepRequest)
            .where(col(EnvStepRequest.id) == request.id)
            .values(state=JobState.DONE, error=None, updated_at=utcnow(), **result)
        )


def _run_profile(engine: Engine, ctx: EnvContext, user_id: int) -> ProfileStep | None:
    if ctx.config.run_id is None:
        return None
    with Session(engine) as session:
        return session.exec(
            select(ProfileStep)
            .where(
                ProfileStep.run_id == ctx.config.run_id,
                ProfileStep.fold == ctx.config.fold,
                ProfileStep.user_id == user_id,
            )
            .order_by(col(ProfileStep.step).desc())
            .limit(1)
        ).first()


def _reset(
    engine: Engine,
    ctx: EnvContext,
    model: ChatModel,
    request: EnvStepRequest,
    episode: EnvEpisode,
) -> None:
    config = ctx.config
    stored = _run_profile(engine, ctx, episode.user_id)
    if stored is not None:
        profile: dict[str, object] = {
            "source": "run",
            "item_ids_json": stored.item_ids_json,
            "profile": stored.profile,
            "explanation": stored.explanation,
            "call_key": stored.call_key,
        }
    else:
        cut = history_batches(_history(episode), config.profile_history, config.profile_batch)
        batches = [[RatedItem(i, ctx.item_info[i], r) for i, r in batch] for batch in cut]
        steps = build_profile(
            model,
            ctx.prompts,
            config.llm,
            user_info=ctx.user_info[episode.user_id],
            batches=batches,
            max_reask=profile_reasks(config.max_reask),
        )
        last = steps[-1]
        profile = {
            "source": "built",
            "item_ids_json": json.dumps([i for batch in cut for i, _ in batch]),
            "profile": last.profile,
            "explanation": last.explanation,
            "call_key": last.call_key,
        }
    _store(engine, request, profile, ratings_json="{}", missing_json="[]")


def _episode_so_far(
    engine: Engine, episode_id: str, before: int
) -> tuple[list[tuple[int, int, int]], str]:
    """Ratings of the episode's earlier steps as (step, item, rating), and the current profile."""
    with Session(engine) as session:
        earlier = session.exec(
            select(EnvStepRequest)
            .where(EnvStepRequest.episode_id == episode_id, col(EnvStepRequest.step) < before)
            .order_by(col(EnvStepRequest.step))
        ).all()
        profile = session.exec(
            select(EnvProfileUpdate.profile)
            .where(
                EnvProfileUpdate.episode_id == episode_id,
                col(EnvProfileUpdate.step) < before,
            )
            .order_by(col(EnvProfileUpdate.step).desc())
            .limit(1)
        ).first()
    if [r.step for r in earlier] != list(range(before)) or any(
        r.state != JobState.DONE for r in earlier
    ):
        raise DataError(
            f"episode {episode_id} step {before} was asked before its earlier steps finished"
        )
    if profile is None:
        raise DataError(f"episode {episode_id} has no profile before step {before}")
    rated: list[tuple[int, int, int]] = []
    for row in earlier:
        ratings = json.loads(row.ratings_json or "{}")
        slate = json.loads(row.slate_json)
        # Slate order is the order the user saw the items in.
        rated += [(row.step, i, int(ratings[str(i)])) for i in slate if str(i) in ratings]
    return rated, profile


def _step(
    engine: Engine,
    ctx: EnvContext,
    model: ChatModel,
    request: EnvStepRequest,
    episode: EnvEpisode,
) -> None:
    config = ctx.config
    step = request.step
    rated, profile = _episode_so_far(engine, episode.id, step)
    user_info = ctx.user_info[episode.user_id]
    slate = [int(i) for i in json.loads(request.slate_json)]
    ratings: dict[int, int] = {}
    missing: list[int] = []
    reasks, raw = 0, None
    if slate:
        recent = [*_history(episode), *((i, r) for _, i, r in rated)]
        outcome = rate_items(
            model,
            ctx.prompts,
            config.llm,
            user_info=user_info,
            profile=profile,
            recent=[RatedItem(i, ctx.item_info[i], r) for i, r in recent[-config.recent_k :]]
            if config.recent_k
            else [],
            items=[ItemToRate(i, ctx.item_info[i]) for i in slate],
            max_reask=config.max_reask,
        )
        ratings, missing, reasks = outcome.ratings, outcome.missing, outcome.reasks
        raw = "\n---\n".join(outcome.raw_texts) if missing else None
    update_row: dict[str, object] | None = None
    if step % config.update_every == 0:
        first = step - config.update_every + 1
        batch = [(i, r) for s, i, r in rated if s >= first]
        batch += [(i, ratings[i]) for i in slate if i in ratings]
        if batch:
            update_row = _update(ctx, model, user_info, profile, batch)
    _store(
        engine,
        request,
        update_row,
        ratings_json=json.dumps({str(i): r for i, r in ratings.items()}),
        missing_json=json.dumps(missing),
        reasks=reasks,
        raw_output=raw,
    )


def _update(
    ctx: EnvContext,
    model: ChatModel,
    user_info: str,
    profile: str,
    batch: list[tuple[int, int]],
) -> dict[str, object]:
    source = "update"
    try:
        answer, key = profile_step(
            model,
            ctx.prompts,
            ctx.config.llm,
            user_info=user_info,
            batch=[RatedItem(i, ctx.item_info[i], r) for i, r in batch],
            profile=profile,
            max_reask=profile_reasks(ctx.config.max_reask),
        )
    except OutputValidationError as err:
        # A bad update loses one window of ratings, not the episode.
        answer = ProfileAnswer(profile=profile, change=f"(no valid update: {err})")
        key, source = "", "kept"
    return {
        "source": source,
        "item_ids_json": json.dumps([i for i, _ in batch]),
        "profile": answer.profile,
        "explanation": answer.change,
        "call_key": key,
    }
