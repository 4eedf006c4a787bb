"""What the episodes of one environment share: data, database, executor, observation, reward.

A ``SimulatedUserEnv`` owns one; a ``SimulatedUserVectorEnv`` shares one between its
sub-environments so that their steps go to the executor as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from lusifer.core.config import LLMConfig
from lusifer.core.errors import DataError
from lusifer.core.settings import Settings, get_settings
from lusifer.data import Dataset
from lusifer.embedded.postgres import database_url_for
from lusifer.env.catalog import Catalog
from lusifer.env.config import EnvConfig
from lusifer.env.executors import CeleryExecutor, LocalExecutor, StepExecutor
from lusifer.env.observation import HashingEncoder, ObservationBuilder, ProfileEncoder
from lusifer.env.rewards import REWARDS, RewardFn
from lusifer.env.store import NewRequest, RequestResult, add_requests, load_results, register_spec
from lusifer.llm import ChatModel, OpenAICompatibleModel
from lusifer.llm.endpoints import api_key, resolve_base_url
from lusifer.method.prompts import load_prompt_set
from lusifer.queue import make_celery
from lusifer.store.engines import create_tables, get_engine

DEFAULT_ENCODER = HashingEncoder(64)


def default_database_url(settings: Settings) -> str:
    """``LUSIFER_DATABASE_URL``, else the work directory's embedded PostgreSQL (as local mode)."""
    if settings.database_url:
        return settings.database_url
    return database_url_for(settings.work_dir)


def default_model(config: LLMConfig, settings: Settings) -> ChatModel:
    """The OpenAI-compatible client of the configured endpoint, with the settings' key."""
    base_url = resolve_base_url(
        config, settings, "start one (see examples/bandit.py --local-model) or pass --base-url"
    )
    return OpenAICompatibleModel(
        base_url,
        api_key(settings),
        timeout_s=config.timeout_s,
        attempts=settings.llm_attempts,
        backoff_max_s=settings.llm_backoff_max_s,
    )


def executor_from_settings(
    engine: Engine, model: ChatModel | None, config: LLMConfig, settings: Settings
) -> StepExecutor:
    """Celery workers when a broker is configured, else threads of this process."""
    if settings.broker_url:
        return CeleryExecutor(engine, make_celery(settings), settings.queue)
    return LocalExecutor(engine, model or default_model(config, settings))


class Simulator:
    """The shared parts of an environment; stores its spec and texts in the database."""

    def __init__(
        self,
        dataset: Dataset,
        config: EnvConfig,
        *,
        engine: Engine | None = None,
        model: ChatModel | None = None,
        executor: StepExecutor | None = None,
        profile_encoder: ProfileEncoder | None = DEFAULT_ENCODER,
        reward_fn: RewardFn | None = None,
        users: Sequence[int] | None = None,
    ) -> None:
        settings = get_settings()
        self.config = config
        self.catalog = Catalog.from_dataset(dataset, config.fold)
        self.engine = engine or get_engine(default_database_url(settings))
        create_tables(self.engine)
        prompts = load_prompt_set(config.prompt_set, config.prompts_dir)
        self.spec_id = register_spec(self.engine, config, prompts, dataset)
        self.executor = executor or LocalExecutor(
            self.engine, model or default_model(config.llm, settings)
        )
        self.observations = ObservationBuilder(
            self.catalog.features, config.obs_window, profile_encoder
        )
        self.reward_fn = reward_fn or REWARDS[config.reward]
        if users is None:
            self.users = self.catalog.users
        else:
            unknown = [u for u in users if u not in self.catalog.histories]
            if unknown:
                raise DataError(
                    f"users {unknown[:10]} have no training ratings in fold {config.fold}; "
                    "an episode starts from a user's history"
                )
            self.users = tuple(users)
        if not self.users:
            raise DataError(f"fold {config.fold} has no user with training ratings")

    def submit(self, requests: Sequence[NewRequest]) -> dict[str, RequestResult]:
        """Store requests, have the executor finish them, and read their results back."""
        ids = add_requests(self.engine, requests)
        self.executor.run(ids)
        return load_results(self.engine, ids)

    def close(self) -> None:
        """Release the executor."""
        self.executor.close()
