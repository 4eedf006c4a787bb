"""Connecting to the services a run needs: cluster addresses, or local mode's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from sqlalchemy import Engine

from coordinator.database_url import database_url_of
from coordinator.local import local_services, local_workers
from lusifer.core.config import LOCAL_BASE_URL, RunConfig
from lusifer.core.errors import (
    ConfigurationError,
    PermanentLLMError,
    ServiceError,
    TransientLLMError,
)
from lusifer.core.settings import Settings
from lusifer.llm import OpenAICompatibleModel
from lusifer.queue import make_celery
from lusifer.store.engines import check_database, create_tables, get_engine, redact_url


@dataclass
class Services:
    """What the coordinator talks to during a run."""

    app: Celery
    engine: Engine
    queue: str
    llm_base_url: str
    health_check: Callable[[], None] | None = None


def check_broker(app: Celery, url: str) -> None:
    """Fail with one line when the broker cannot be reached."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=5)
    except Exception as err:  # kombu raises many kinds; all mean "unreachable" here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ServiceError(
            f"broker {redact_url(url)} is unreachable ({reason}); "
            "start Redis or fix LUSIFER_BROKER_URL"
        ) from None


def preflight_llm(base_url: str, model: str, settings: Settings) -> None:
    """Check the endpoint answers and serves the model before anything is stored."""
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    client = OpenAICompatibleModel(base_url, key, timeout_s=15.0, attempts=2, backoff_max_s=2.0)
    try:
        models = client.list_models()
    except TransientLLMError as err:
        raise ServiceError(f"{err}; start the server or fix --base-url") from None
    if models is not None and models and model not in models:
        shown = ", ".join(models[:8])
        raise PermanentLLMError(
            f"model {model!r} is not served at {base_url} (it serves: {shown}); fix --model"
        )


@contextmanager
def run_services(
    settings: Settings, config: RunConfig, *, workers: int, threads: int | None
) -> Iterator[Services]:
    """Cluster mode when a broker is configured, otherwise local mode with its own services.

    The LLM endpoint is checked (a preflight call) before anything is stored.
    """
    uses_local_model = config.llm.base_url == LOCAL_BASE_URL
    if settings.broker_url:
        if not settings.database_url:
            raise ConfigurationError(
                "LUSIFER_BROKER_URL is set but LUSIFER_DATABASE_URL is not: remote workers need "
                "a shared database; set LUSIFER_DATABASE_URL (e.g. postgresql+psycopg://...)"
            )
        if uses_local_model:
            raise ConfigurationError(
                "cluster mode needs an LLM endpoint the workers can reach: pass --base-url "
                "and --model"
            )
        # Every check before the first write: an unreachable broker, database or LLM leaves
        # no database file and no tables behind.
        app = make_celery(settings)
        check_broker(app, settings.broker_url)
        engine = get_engine(settings.database_url)
        check_database(engine)
        preflight_llm(config.llm.base_url, config.llm.model, settings)
        create_tables(engine)
        yield Services(app, engine, settings.queue, config.llm.base_url)
        return
    if not uses_local_model:
        # A named endpoint is checked before local mode starts anything or writes anything.
        preflight_llm(config.llm.base_url, config.llm.model, settings)
    work_dir = Path(settings.work_dir)
    with local_services(
        work_dir, database_url=database_url_of(settings), start_model=uses_local_model
    ) as (env, stack):
        engine = get_engine(env.database_url)
        check_database(engine)
        create_tables(engine)
        app = make_celery(settings, env.broker_url)
        worker_env = {
            "LUSIFER_BROKER_URL": env.broker_url,
            "LUSIFER_DATABASE_URL": env.database_url,
            "LUSIFER_QUEUE": settings.queue,
        }
        if env.llm_base_url:
            worker_env["LUSIFER_LOCAL_LLM_URL"] = env.llm_base_url
        if threads is None:
            # llama.cpp's server answers one request at a time and reuses the evaluated prefix
            # of the previous prompt: one thread keeps a user's chunks in a row (its profile
            # evaluated once) where more threads would only interleave users.
            threads = 1 if uses_local_model else settings.worker_concurrency
        pool = stack.enter_context(
            local_workers(work_dir, worker_env, workers, threads, settings.queue)
        )
        pool.model_servers.extend(env.model_servers)
        if uses_local_model and env.llm_base_url:
            preflight_llm(env.llm_base_url, config.llm.model, settings)
        yield Services(
            app, engine, settings.queue, env.llm_base_url or config.llm.base_url, pool.check
        )
