"""Job ids and inputs. A message on the queue carries a job id and nothing else."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from lusifer.store.tables import JobKind


def profile_job_id(run_id: str, fold: str, user_id: int) -> str:
    """Deterministic id of a user's profile job in a fold."""
    return f"{run_id}/{fold}/{user_id}/{JobKind.PROFILE}"


def rating_job_id(run_id: str, fold: str, user_id: int, chunk: int) -> str:
    """Deterministic id of one rating chunk of a user in a fold."""
    return f"{run_id}/{fold}/{user_id}/{JobKind.RATING}/{chunk}"


class ProfileInputs(BaseModel):
    """The chronological batches of (item, rating) a profile is built from."""

    model_config = ConfigDict(frozen=True)

    batches: list[list[tuple[int, int]]]


class RatingInputs(BaseModel):
    """The recent (item, rating) pairs shown to the simulated user and the items to rate."""

    model_config = ConfigDict(frozen=True)

    recent: list[tuple[int, int]]
    items: list[int]
