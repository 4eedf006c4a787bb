"""The paper's RL loop from Python: a user rates recommended items and their profile moves.

Nothing new is written for it: the environment's step requests (``lusifer.env``) do it, run
by the same Celery workers as batch runs (``CeleryExecutor``), so each call rates the items
with the user's current profile and then updates that profile from the new ratings, with
the LLM's explanation of what changed. A user's episode starts from the profile of the last
``build_profiles`` run that holds the user, else from a profile built on demand.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from coordinator.services import Services
from lusifer.core.config import RunConfig
from lusifer.core.errors import DataError
from lusifer.data.from_frames import FrameData, fold_dataset
from lusifer.env import CeleryExecutor, EnvConfig, ProfileVersion, Simulator
from lusifer.env.config import parse_env_config
from lusifer.env.store import reset_request, step_request


@dataclass
class Episode:
    """A user's running episode: its id in the database, steps taken and profiles so far."""

    id: str
    user_id: int
    step: int = 0
    profiles: list[ProfileVersion] = field(default_factory=list)


def env_config(config: RunConfig, fold: str, profiles_run: str | None) -> EnvConfig:
    """The environment that matches an API run's configuration (one item per slate slot)."""
    return parse_env_config(
        {
            "llm": config.llm,
            "fold": fold,
            "run_id": profiles_run,
            "slate_size": 1,
            "update_every": 1,
            "profile_history": config.profile_history,
            "profile_batch": config.profile_batch,
            "recent_k": config.recent_k,
            "overview_chars": config.overview_chars,
            "max_reask": config.max_reask,
            "prompt_set": config.prompt_set,
            "prompts_dir": config.prompts_dir,
        }
    )


def item_ids_of(items: object, data: FrameData, item_column: str) -> list[int]:
    """Items as a DataFrame (its item id column), a Series or ids; each once, all known."""
    if isinstance(items, pd.DataFrame):
        if item_column not in items.columns:
            raise DataError(
                f"items lacks column {item_column!r}: pass a DataFrame with the item id column "
                "or a list of item ids"
            )
        values: object = items[item_column]
    else:
        values = items
    try:
        ids = [int(v) for v in np.asarray(values).reshape(-1).tolist()]
    except (TypeError, ValueError):
        raise DataError("items must be integer item ids (or a DataFrame of them)") from None
    ids = list(dict.fromkeys(ids))
    unknown = [i for i in ids if i not in data.items]
    if unknown:
        raise DataError(
            f"items {unknown[:10]} are not in items_df: recommend items the catalogue holds"
        )
    if not ids:
        raise DataError("no items to rate: pass at least one item id")
    return ids


def simulator_for(
    services: Services, data: FrameData, config: EnvConfig, user_id: int
) -> Simulator:
    """The environment's shared parts for one user, stepping through the run's workers."""
    if user_id not in data.users or not np.isin(user_id, data.history[:, 0]):
        raise DataError(
            f"user {user_id} has no rating in ratings_df: a profile is built from a user's "
            "history; pass a user with ratings"
        )
    lone = np.array([[user_id, 0, 0, 0]], dtype=np.int64)[:0]
    dataset = fold_dataset(data, lone, fold=config.fold, users=[user_id])
    executor = CeleryExecutor(services.engine, services.app, services.queue)
    return Simulator(dataset, config, engine=services.engine, executor=executor, users=[user_id])


def rate_step(
    sim: Simulator, episode: Episode | None, user_id: int, items: list[int]
) -> tuple[Episode, dict[int, int]]:
    """Start the user's episode if needed, then have them rate ``items`` (one step).

    Returns the episode and the ratings the LLM gave (an item it left unrated is absent).
    """
    if episode is None:
        history = sim.catalog.histories[user_id][-sim.config.history_needed() :]
        new = reset_request(f"{sim.spec_id}-{secrets.token_hex(8)}", sim.spec_id, user_id, history)
        result = sim.submit([new])[new.id]
        result.raise_if_failed(new.id)
        assert result.profile is not None
        episode = Episode(new.id.rsplit("/", 1)[0], user_id, profiles=[result.profile])
    step = step_request(episode.id, episode.step + 1, items)
    result = sim.submit([step])[step.id]
    result.raise_if_failed(step.id)
    episode.step += 1
    if result.profile is not None:
        episode.profiles.append(result.profile)
    return episode, result.ratings
