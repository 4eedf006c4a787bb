"""A stored run as pandas DataFrames: its ratings, its profiles and its LLM calls."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from coordinator.database_url import database_url_of
from lusifer.core.errors import DataError
from lusifer.core.settings import Settings, get_settings
from lusifer.store.engines import get_engine, redact_url, require_tables
from lusifer.store.tables import CallUse, Job, LLMCall, ProfileStep, Run, SimulatedRating

RATING_COLUMNS = [
    "fold", "user_id", "item_id", "true_rating", "simulated_rating", "job_id", "reason",
]  # fmt: skip
PROFILE_COLUMNS = [
    "fold", "user_id", "step", "profile", "explanation", "item_ids", "call_key",
]  # fmt: skip
CALL_COLUMNS = [
    "fold", "job_id", "call_key", "cached", "retries", "model", "prompt_tokens",
    "completion_tokens", "cached_tokens", "latency_s", "cost_usd", "request_json",
    "response_text",
]  # fmt: skip


@dataclass(frozen=True)
class Results:
    """One run's rows, ready for analysis: ``ratings``, ``profiles``, ``calls``, ``config``."""

    run_id: str
    status: str
    config: dict[str, Any]
    ratings: pd.DataFrame
    profiles: pd.DataFrame
    calls: pd.DataFrame


def _frame(rows: list[Any], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame.from_records([tuple(r) for r in rows], columns=columns)


def read_results(engine: Engine, run_id: str) -> Results:
    """Every stored row of a run (ratings with the reason a rating is missing)."""
    with Session(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise DataError(
                f"run {run_id!r} is not in the database; check the id (`lusifer runs` lists them)"
            )
        rating_rows = session.execute(
            sa_select(
                col(SimulatedRating.fold),
                col(SimulatedRating.user_id),
                col(SimulatedRating.item_id),
                col(SimulatedRating.true_rating),
                col(SimulatedRating.rating),
                col(SimulatedRating.job_id),
                col(Job.error),
            )
            .join(Job, col(Job.id) == col(SimulatedRating.job_id), isouter=True)
            .where(col(SimulatedRating.run_id) == run_id)
            .order_by(
                col(SimulatedRating.fold),
                col(SimulatedRating.user_id),
                col(SimulatedRating.item_id),
            )
        ).all()
        profile_rows = session.execute(
            sa_select(
                col(ProfileStep.fold),
                col(ProfileStep.user_id),
                col(ProfileStep.step),
                col(ProfileStep.profile),
                col(ProfileStep.explanation),
                col(ProfileStep.item_ids_json),
                col(ProfileStep.call_key),
            )
            .where(col(ProfileStep.run_id) == run_id)
            .order_by(col(ProfileStep.fold), col(ProfileStep.user_id), col(ProfileStep.step))
        ).all()
        call_rows = session.execute(
            sa_select(
                col(CallUse.fold),
                col(CallUse.job_id),
                col(CallUse.call_key),
                col(CallUse.cached),
                col(CallUse.retries),
                col(LLMCall.model),
                col(LLMCall.prompt_tokens),
                col(LLMCall.completion_tokens),
                col(LLMCall.cached_tokens),
                col(LLMCall.latency_s),
                col(LLMCall.cost_usd),
                col(LLMCall.request_json),
                col(LLMCall.response_text),
            )
            .join(LLMCall, col(LLMCall.key) == col(CallUse.call_key))
            .where(col(CallUse.run_id) == run_id)
            .order_by(col(CallUse.job_id), col(CallUse.call_key))
        ).all()
        status, config = run.status, json.loads(run.config_json)
    ratings = _frame(list(rating_rows), RATING_COLUMNS)
    ratings["simulated_rating"] = ratings["simulated_rating"].astype("Int64")
    # A rating is missing because its job failed (the error says why) or has not run yet.
    unrated = ratings["simulated_rating"].isna()
    ratings["reason"] = ratings["reason"].where(unrated, None)
    ratings.loc[unrated & ratings["reason"].isna(), "reason"] = "not simulated (yet)"
    profiles = _frame(list(profile_rows), PROFILE_COLUMNS)
    profiles["item_ids"] = [json.loads(text) for text in profiles["item_ids"]]
    return Results(
        run_id=run_id,
        status=status,
        config=config,
        ratings=ratings,
        profiles=profiles,
        calls=_frame(list(call_rows), CALL_COLUMNS),
    )


def results(run_id: str, settings: Settings | None = None) -> Results:
    """DataFrames of any stored run (``lusifer runs`` lists them), read from its database."""
    settings = settings or get_settings()
    url = database_url_of(settings)
    engine = get_engine(url)
    require_tables(engine)
    try:
        return read_results(engine, run_id)
    except DataError:
        raise DataError(
            f"run {run_id!r} is not in {redact_url(url)}; check the id (`lusifer runs` lists "
            "them) and LUSIFER_DATABASE_URL"
        ) from None


def profiles_frame(found: Results) -> pd.DataFrame:
    """One row per user: the final profile and the list of every step's profile."""
    rows = []
    for user_id, steps in found.profiles.groupby("user_id", sort=True):
        ordered = steps.sort_values("step")
        history = ordered[["step", "profile", "explanation", "item_ids"]].to_dict("records")
        rows.append(
            {
                "user_id": int(str(user_id)),
                "profile": ordered["profile"].iloc[-1],
                "explanation": ordered["explanation"].iloc[-1],
                "steps": len(ordered),
                "profile_history": history,
            }
        )
    frame = pd.DataFrame(
        rows, columns=["user_id", "profile", "explanation", "steps", "profile_history"]
    )
    frame.attrs["run_id"] = found.run_id
    return frame
