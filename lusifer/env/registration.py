"""Gymnasium ids of the simulated-user environments (registered when ``lusifer.env`` loads).

    import gymnasium, lusifer.env
    env = gymnasium.make("lusifer/MovieLens100K-v0", base_url=URL, model=NAME, slate_size=5)
    env = gymnasium.make("lusifer/MovieLens100K-SingleItem-v0", base_url=URL, model=NAME)
    vec = gymnasium.make_vec("lusifer/MovieLens100K-v0", num_envs=16,
                             vectorization_mode="vector_entry_point", base_url=URL, model=NAME)

Keyword arguments: ``base_url`` and ``model`` (or a whole ``llm=LLMConfig``), the data
(``data_dir`` holding ``ml-100k/`` and optionally ``tmdb/``; default ``LUSIFER_DATA_DIR``, else
downloaded into ``LUSIFER_CACHE_DIR``; or a loaded ``dataset``), any ``EnvConfig`` field
(``slate_size=5``, ``max_steps=20``...) or a whole ``config``, and the environment's own
(``engine``, ``model_client``, ``executor``, ``reward_fn``, ``users``, ``render_mode``).
``gymnasium.make("lusifer.env:lusifer/MovieLens100K-v0", ...)`` imports the module itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

from lusifer.core.config import LLMConfig
from lusifer.core.errors import ConfigurationError
from lusifer.core.settings import get_settings
from lusifer.data import Dataset, ensure_movielens_100k, load_movielens_100k
from lusifer.env.config import EnvConfig, parse_env_config
from lusifer.env.env import SimulatedUserEnv
from lusifer.env.single_item import SingleItemEnv
from lusifer.env.vector import SimulatedUserVectorEnv

MOVIELENS = "lusifer/MovieLens100K-v0"
MOVIELENS_SINGLE_ITEM = "lusifer/MovieLens100K-SingleItem-v0"

# Arguments of the environment classes, passed through; the rest configure the episode.
_ENV_ARGS = ("engine", "executor", "profile_encoder", "reward_fn", "users")


def _dataset(data_dir: str | Path | None, fold: str) -> Dataset:
    settings = get_settings()
    root = Path(data_dir) if data_dir is not None else settings.data_dir
    if root is None:
        ml_dir = ensure_movielens_100k(Path(settings.cache_dir))
        overviews = None
    else:
        ml_dir = root / "ml-100k"
        overviews = root / "tmdb" / "ml-100k_movies_tmdb.csv"
    return load_movielens_100k(
        ml_dir, overviews if overviews and overviews.is_file() else None, folds=(fold,)
    )


def _config(kwargs: dict[str, Any], single_item: bool) -> EnvConfig:
    config = kwargs.pop("config", None)
    llm = kwargs.pop("llm", None)
    base_url, model = kwargs.pop("base_url", None), kwargs.pop("model", None)
    if config is None:
        if llm is None:
            if not base_url or not model:
                raise ConfigurationError(
                    "the environment needs an LLM: pass base_url= and model= "
                    "(or llm=LLMConfig(...) or config=EnvConfig(...)) to gymnasium.make"
                )
            llm = LLMConfig(base_url=base_url, model=model)
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in EnvConfig.model_fields}
        if single_item:
            fields.setdefault("slate_size", 1)
        config = parse_env_config({"llm": llm, **fields})
    elif not isinstance(config, EnvConfig):
        config = parse_env_config(config)
    if single_item and config.slate_size != 1:
        config = config.model_copy(update={"slate_size": 1})
    return config


def _parts(kwargs: dict[str, Any], single_item: bool) -> dict[str, Any]:
    """The arguments of ``SimulatedUserEnv``/``SimulatedUserVectorEnv`` from make's kwargs."""
    kwargs = dict(kwargs)
    data_dir = kwargs.pop("data_dir", None)
    dataset = kwargs.pop("dataset", None)
    config = _config(kwargs, single_item)
    parts = {k: kwargs.pop(k) for k in _ENV_ARGS if k in kwargs}
    if "model_client" in kwargs:
        parts["model"] = kwargs.pop("model_client")
    render_mode = kwargs.pop("render_mode", None)
    if kwargs:
        raise ConfigurationError(
            f"unknown environment argument {sorted(kwargs)[0]!r}: use an EnvConfig field, "
            f"data_dir, dataset, base_url, model, llm, config or one of {', '.join(_ENV_ARGS)}"
        )
    parts["dataset"] = dataset if dataset is not None else _dataset(data_dir, config.fold)
    parts["config"] = config
    parts["render_mode"] = render_mode
    return parts


def make_movielens_env(**kwargs: Any) -> SimulatedUserEnv:
    """The slate environment over MovieLens 100K (``MultiDiscrete`` actions)."""
    return SimulatedUserEnv(**_parts(kwargs, single_item=False))


def make_movielens_single_item_env(**kwargs: Any) -> SingleItemEnv:
    """The single-item environment over MovieLens 100K (``Discrete(n_items)`` actions)."""
    return SingleItemEnv(SimulatedUserEnv(**_parts(kwargs, single_item=True)))


def make_movielens_vector_env(num_envs: int = 1, **kwargs: Any) -> SimulatedUserVectorEnv:
    """``num_envs`` users stepped at once (one LLM latency a step)."""
    parts = _parts(kwargs, single_item=False)
    if parts.pop("render_mode") is not None:
        raise ConfigurationError("the vector environment does not render: drop render_mode")
    return SimulatedUserVectorEnv(num_envs, **parts)


def register_envs() -> None:
    """Register the ids (again: gymnasium only warns, so importing twice is harmless)."""
    if MOVIELENS not in gym.registry:
        gym.register(
            MOVIELENS,
            entry_point=make_movielens_env,
            vector_entry_point=make_movielens_vector_env,
        )
    if MOVIELENS_SINGLE_ITEM not in gym.registry:
        gym.register(MOVIELENS_SINGLE_ITEM, entry_point=make_movielens_single_item_env)
