"""Doing a job: the plain functions a Celery task calls, storing results idempotently."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from lusifer.core.errors import OutputValidationError
from lusifer.llm import ChatModel
from lusifer.method.dialogues import (
    Dialogue,
    ItemToRate,
    ProfileStepResult,
    RatedItem,
    RatingOutcome,
    build_profile_dialogue,
    drive,
    profile_reasks,
    rating_dialogue,
)
from lusifer.store.call_cache import CallContext, CallGate, RecordedModel
from lusifer.store.job_ids import ProfileInputs, RatingInputs
from lusifer.store.runs import RunContext
from lusifer.store.tables import Job, ProfileStep, SimulatedRating


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: ``error`` set means failed with ``raw_output`` kept."""

    error: str | None = None
    raw_output: str | None = None
    reasks: int = 0
    new_calls: int = 0
    profile: str | None = None  # the final profile a profile job built


def _recorded(
    engine: Engine, model: ChatModel, ctx: RunContext, job: Job, gate: CallGate | None
) -> RecordedModel:
    context = CallContext(ctx.run_id, job.id, job.fold)
    return RecordedModel(engine, model, ctx.config.llm, context, gate)


def profile_dialogue(job: Job, ctx: RunContext) -> Dialogue[list[ProfileStepResult]]:
    """The calls that build a profile job's profile, step by step."""
    inputs = ProfileInputs.model_validate_json(job.inputs_json)
    batches = [
        [RatedItem(item_id, ctx.item_info[item_id], rating) for item_id, rating in batch]
        for batch in inputs.batches
    ]
    return build_profile_dialogue(
        ctx.prompts,
        ctx.config.llm,
        user_info=ctx.user_info[job.user_id],
        batches=batches,
        # At least one re-ask, as the paper's method had; more when the run allows more.
        max_reask=profile_reasks(ctx.config.max_reask),
    )


def execute_profile_job(
    engine: Engine, job: Job, ctx: RunContext, model: ChatModel, gate: CallGate | None = None
) -> JobOutcome:
    """Build a user's profile step by step, storing every intermediate profile.

    ``gate`` is held around each call (a worker's slots for calls in flight).
    """
    recorded = _recorded(engine, model, ctx, job, gate)
    try:
        steps = drive(profile_dialogue(job, ctx), recorded)
    except OutputValidationError as err:
        return JobOutcome(error=str(err), raw_output=err.raw_text, new_calls=recorded.new_calls)
    # Every step at once, at the end: each step's call is already committed (the cache is
    # the checkpoint), so a job that dies half-way replays its finished steps for free.
    rows = step_rows(job, steps)
    if rows:
        with engine.begin() as conn:
            conn.execute(store_step_statement(engine.dialect.name), rows)
    return profile_outcome(steps, recorded.new_calls)


def profile_outcome(steps: list[ProfileStepResult], new_calls: int) -> JobOutcome:
    """How a profile job that built its steps ended."""
    return JobOutcome(
        reasks=sum(s.reasks for s in steps),
        new_calls=new_calls,
        profile=steps[-1].profile if steps else None,
    )


_STEP_KEYS = ("run_id", "fold", "user_id", "step")
_STEP_UPDATED = ("profile", "explanation", "call_key", "item_ids_json")


@lru_cache(maxsize=4)
def store_step_statement(dialect: str) -> Any:
    """Insert a profile step, or update the one stored for the same user, fold and step."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_steps).values({c: bindparam(c) for c in (*_STEP_KEYS, *_STEP_UPDATED)})
    return statement.on_conflict_do_update(
        index_elements=list(_STEP_KEYS),
        set_={c: getattr(statement.excluded, c) for c in _STEP_UPDATED},
    )


def step_rows(job: Job, steps: list[ProfileStepResult]) -> list[dict[str, Any]]:
    """The parameters of ``store_step_statement`` for each step."""
    return [
        {
            "run_id": job.run_id,
            "fold": job.fold,
            "user_id": job.user_id,
            "step": step.step,
            "item_ids_json": json.dumps(step.item_ids),
            "profile": step.profile,
            "explanation": step.explanation,
            "call_key": step.call_key,
        }
        for step in steps
    ]


def latest_profile(engine: Engine, run_id: str, fold: str, user_id: int) -> str | None:
    """The final profile of a user in a fold, or None when none was built."""
    with Session(engine) as session:
        row = session.exec(
            select(ProfileStep.profile)
            .where(
                ProfileStep.run_id == run_id,
                ProfileStep.fold == fold,
                ProfileStep.user_id == user_id,
            )
            .order_by(col(ProfileStep.step).desc())
            .limit(1)
        ).first()
        return row


# One prepared UPDATE, sent for all the chunk's ratings at once (the driver pipelines the
# parameter sets): a CASE over the chunk was a new statement to build and compile each time.
_ratings = SimulatedRating.__table__  # type: ignore[attr-defined]
_steps = ProfileStep.__table__  # type: ignore[attr-defined]
STORE_RATING = (
    update(_ratings)
    .where(
        _ratings.c.run_id == bindparam("run"),
        _ratings.c.fold == bindparam("in_fold"),
        _ratings.c.user_id == bindparam("user"),
        _ratings.c.item_id == bindparam("item"),
    )
    .values(rating=bindparam("r"))
)


def rating_job_dialogue(job: Job, ctx: RunContext, profile: str) -> Dialogue[RatingOutcome]:
    """The calls that rate a rating job's chunk of items."""
    inputs = RatingInputs.model_validate_json(job.inputs_json)
    return rating_dialogue(
        ctx.prompts,
        ctx.config.llm,
        user_info=ctx.user_info[job.user_id],
        profile=profile,
        recent=[RatedItem(i, ctx.item_info[i], r) for i, r in inputs.recent],
        items=[ItemToRate(i, ctx.item_info[i]) for i in inputs.items],
        max_reask=ctx.config.max_reask,
    )


MISSING_PROFILE = JobOutcome(error="the user's profile is missing (its profile job failed)")


def rating_rows(job: Job, outcome: RatingOutcome) -> list[dict[str, Any]]:
    """The parameters of ``STORE_RATING`` for each valid rating of a chunk."""
    return [
        {"run": job.run_id, "in_fold": job.fold, "user": job.user_id, "item": i, "r": r}
        for i, r in outcome.ratings.items()
    ]


def rating_outcome(outcome: RatingOutcome, new_calls: int) -> JobOutcome:
    """How a rating job ended: failed with its raw answers when an item is left unrated."""
    if outcome.missing:
        return JobOutcome(
            error=f"no valid rating for items {outcome.missing} after {outcome.reasks} re-asks: "
            + "; ".join(outcome.problems),
            raw_output="\n---\n".join(outcome.raw_texts),
            reasks=outcome.reasks,
            new_calls=new_calls,
        )
    return JobOutcome(reasks=outcome.reasks, new_calls=new_calls)


def execute_rating_job(
    engine: Engine,
    job: Job,
    ctx: RunContext,
    model: ChatModel,
    profile: str | None = None,
    gate: CallGate | None = None,
) -> JobOutcome:
    """Rate a chunk of a user's test items and store every valid rating.

    ``profile`` is the user's final profile when the caller has it (the worker that just built
    it); otherwise it is read from the database.
    """
    if profile is None:
        profile = latest_profile(engine, ctx.run_id, job.fold, job.user_id)
    if profile is None:
        return MISSING_PROFILE
    recorded = _recorded(engine, model, ctx, job, gate)
    outcome = drive(rating_job_dialogue(job, ctx, profile), recorded)
    rows = rating_rows(job, outcome)
    if rows:
        with engine.begin() as conn:
            conn.execute(STORE_RATING, rows)
    return rating_outcome(outcome, recorded.new_calls)
