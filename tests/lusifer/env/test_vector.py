"""SimulatedUserVectorEnv in threads: the same transitions as single environments, batched
steps that cost one LLM latency, and next-step autoreset."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from lusifer.core.settings import Settings
from lusifer.env import (
    CeleryExecutor,
    LocalExecutor,
    SimulatedUserEnv,
    SimulatedUserVectorEnv,
)
from lusifer.env.simulator import executor_from_settings
from lusifer.llm import ChatRequest, FakeChatModel
from tests.lusifer.env.conftest import env_config, fake_answer, tiny_dataset

SLATES = [np.array([[20, 21, 22], [23, 24, 25], [26, 27, 28]]), np.array([[29, 30, 31]] * 3)]


def _vector(
    engine: Engine, model: FakeChatModel, n: int = 3, **fields: object
) -> SimulatedUserVectorEnv:
    return SimulatedUserVectorEnv(
        n,
        tiny_dataset(),
        env_config(**fields),
        engine=engine,
        executor=LocalExecutor(engine, model),
    )


def test_the_vector_env_matches_single_envs(engine: Engine, fake: FakeChatModel) -> None:
    vec = _vector(engine, fake)
    obs, infos = vec.reset(seed=10)
    assert obs.shape == (3, *vec.single_observation_space.shape)
    assert obs in vec.observation_space
    assert infos["action_mask"].shape == (3, 40) and infos["_action_mask"].all()
    steps = [vec.step(slates) for slates in SLATES]
    vec.close()
    for n in range(3):
        single = SimulatedUserEnv(tiny_dataset(), env_config(), engine=engine, model=fake)
        single_obs, single_info = single.reset(seed=10 + n)
        np.testing.assert_array_equal(obs[n], single_obs)
        assert infos["user_id"][n] == single_info["user_id"]
        for (v_obs, v_rew, v_term, v_trunc, v_info), slates in zip(steps, SLATES, strict=True):
            s_obs, s_rew, s_term, s_trunc, s_info = single.step(slates[n])
            np.testing.assert_array_equal(v_obs[n], s_obs)
            assert (v_rew[n], v_term[n], v_trunc[n]) == (s_rew, s_term, s_trunc)
            assert v_info["ratings"][n].tolist() == s_info["ratings"].tolist()
            assert v_info["profile_history"][n] == s_info["profile_history"]


def test_sub_environments_that_end_reset_on_the_next_step(
    engine: Engine, fake: FakeChatModel
) -> None:
    vec = _vector(engine, fake, max_steps=2)
    vec.reset(seed=0, options={"user_ids": [1, 2, 3]})
    first_ids = vec.episode_ids
    vec.step(SLATES[0])
    _, rewards, terminations, truncations, _ = vec.step(SLATES[1])
    assert truncations.all() and not terminations.any()
    # The next step ignores the actions and starts new episodes.
    _, rewards, terminations, truncations, infos = vec.step(SLATES[0])
    assert (rewards == 0).all() and not (terminations | truncations).any()
    assert (infos["step"] == 0).all()
    assert all(a != b for a, b in zip(first_ids, vec.episode_ids, strict=True))
    assert vec.step(SLATES[0])[1].min() > 0  # and then steps them again
    vec.close()


def test_a_vector_step_costs_about_one_llm_latency(engine: Engine) -> None:
    latency = 0.3

    def slow(request: ChatRequest) -> str:
        time.sleep(latency)
        return fake_answer(request)

    vec = _vector(engine, FakeChatModel(slow), n=6, update_every=50)
    vec.reset(seed=0)
    started = time.perf_counter()
    vec.step(np.array([[20, 21, 22]] * 6))
    elapsed = time.perf_counter() - started
    vec.close()
    # Six users one after another would take 6 x 0.3 s.
    assert elapsed < 3 * latency, elapsed


def test_reset_checks_the_number_of_seeds_and_users(engine: Engine, fake: FakeChatModel) -> None:
    vec = _vector(engine, fake)
    with pytest.raises(ValueError, match="seeds"):
        vec.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="user ids"):
        vec.reset(options={"user_ids": [1]})
    vec.close()


def test_the_broker_setting_chooses_celery_workers(engine: Engine, tmp_path: Path) -> None:
    config = env_config().llm
    fake = FakeChatModel(fake_answer)
    local = Settings(broker_url=None, work_dir=tmp_path)
    remote = Settings(broker_url="redis://broker.invalid:6379/0", work_dir=tmp_path)
    assert isinstance(executor_from_settings(engine, fake, config, local), LocalExecutor)
    assert isinstance(executor_from_settings(engine, fake, config, remote), CeleryExecutor)


def test_a_bad_slate_moves_no_sub_environment(engine: Engine, fake: FakeChatModel) -> None:
    vec = _vector(engine, fake)
    vec.reset(seed=0, options={"user_ids": [1, 2, 3]})
    before = vec.action_masks().copy()
    with pytest.raises(ValueError, match="action 2"):
        vec.step(np.array([[20, 21, 22], [23, 24, 25], [26, 27, 99]]))
    np.testing.assert_array_equal(vec.action_masks(), before)
    assert vec.step(SLATES[0])[1].min() > 0
    vec.close()
