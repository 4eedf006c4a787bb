"""The registered ids: gymnasium.make and make_vec build the environments, with the metadata
gymnasium's checker asks for, and bad arguments are one clear error."""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from sqlalchemy import Engine

from lusifer.core.config import LLMConfig
from lusifer.core.errors import ConfigurationError
from lusifer.env import MOVIELENS, MOVIELENS_SINGLE_ITEM, SimulatedUserVectorEnv
from lusifer.llm import FakeChatModel
from tests.lusifer.env.conftest import N_ITEMS, env_config, tiny_dataset

LLM = LLMConfig(base_url="http://fake.invalid/v1", model="fake")


def test_make_builds_the_slate_environment(engine: Engine, fake: FakeChatModel) -> None:
    env = gymnasium.make(
        MOVIELENS, dataset=tiny_dataset(), config=env_config(), engine=engine, model_client=fake
    )
    # (env.spec is a deep copy, which live arguments such as an engine defeat.)
    assert env.unwrapped.spec is not None and env.unwrapped.spec.id == MOVIELENS
    assert env.metadata["render_fps"] > 0 and "ansi" in env.metadata["render_modes"]
    assert env.action_space == spaces.MultiDiscrete([N_ITEMS] * 3)
    # Its re-makes (render and close checks) would deep-copy the live engine.
    check_env(env.unwrapped, skip_render_check=True, skip_close_check=True)
    env.close()


def test_make_builds_single_item_mode_from_config_fields(
    engine: Engine, fake: FakeChatModel
) -> None:
    env = gymnasium.make(
        MOVIELENS_SINGLE_ITEM,
        dataset=tiny_dataset(),
        llm=LLM,
        fold="f1",
        profile_history=10,
        profile_batch=5,
        max_steps=4,
        engine=engine,
        model_client=fake,
        render_mode="ansi",
    )
    assert env.action_space == spaces.Discrete(N_ITEMS)
    _, info = env.reset(seed=0)
    _, _, _, _, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
    assert info["step"] == 1 and "user" in str(env.render())
    env.close()


def test_make_vec_builds_the_vector_environment(engine: Engine, fake: FakeChatModel) -> None:
    vec = gymnasium.make_vec(
        MOVIELENS,
        num_envs=2,
        vectorization_mode="vector_entry_point",
        dataset=tiny_dataset(),
        config=env_config(),
        engine=engine,
        model_client=fake,
    )
    assert isinstance(vec.unwrapped, SimulatedUserVectorEnv) and vec.num_envs == 2
    obs, _ = vec.reset(seed=0)
    assert obs.shape[0] == 2
    vec.close()


def test_make_without_an_llm_says_what_to_pass() -> None:
    with pytest.raises(ConfigurationError, match="pass base_url= and model="):
        gymnasium.make(MOVIELENS, dataset=tiny_dataset())


def test_make_refuses_an_unknown_argument(engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match="unknown environment argument 'slate'"):
        gymnasium.make(MOVIELENS, dataset=tiny_dataset(), llm=LLM, slate=3, engine=engine)


def test_make_refuses_an_invalid_config_field(engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match="slate_size"):
        gymnasium.make(MOVIELENS, dataset=tiny_dataset(), llm=LLM, slate_size=0, engine=engine)


def test_make_reads_movielens_from_a_data_dir(engine: Engine, fake: FakeChatModel) -> None:
    value = os.environ.get("LUSIFER_DATA_DIR")
    if not value:
        pytest.skip("LUSIFER_DATA_DIR is not set: point it at a directory holding ml-100k/")
    env = gymnasium.make(
        MOVIELENS_SINGLE_ITEM, data_dir=Path(value), llm=LLM, engine=engine, model_client=fake
    )
    assert env.action_space == spaces.Discrete(1682)
    assert fake.requests == []  # building the environment calls no LLM
    env.close()
