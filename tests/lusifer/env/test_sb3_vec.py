"""SB3VecEnv: Stable-Baselines3's VecEnv conventions over the vector environment, one batch of
steps per LLM latency, and the masks sb3-contrib reads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from gymnasium import spaces
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from sqlalchemy import Engine
from stable_baselines3.common.vec_env import VecMonitor

from lusifer.env import LocalExecutor, SimulatedUserEnv, SimulatedUserVectorEnv, SingleItemEnv
from lusifer.env.sb3_vec import SB3VecEnv
from lusifer.llm import FakeChatModel
from tests.lusifer.env.conftest import N_ITEMS, env_config, tiny_dataset


class CountingExecutor(LocalExecutor):
    """Threads, and the size of every batch the environment hands over."""

    def __init__(self, engine: Engine, model: FakeChatModel) -> None:
        super().__init__(engine, model)
        self.batches: list[int] = []

    def run(self, request_ids: Sequence[str]) -> None:
        self.batches.append(len(request_ids))
        super().run(request_ids)


def _sb3(
    engine: Engine, model: FakeChatModel, n: int = 3, *, single_item: bool = False, **fields: object
) -> tuple[SB3VecEnv, CountingExecutor]:
    executor = CountingExecutor(engine, model)
    vector = SimulatedUserVectorEnv(
        n, tiny_dataset(), env_config(**fields), engine=engine, executor=executor
    )
    return SB3VecEnv(vector, single_item=single_item), executor


def vector_shape(vec: SB3VecEnv) -> tuple[int, ...]:
    """One observation's shape."""
    return tuple(vec.observation_space.shape or ())


def test_reset_returns_observations_and_keeps_infos(engine: Engine, fake: FakeChatModel) -> None:
    vec, executor = _sb3(engine, fake)
    vec.seed(7)
    obs = np.asarray(vec.reset())
    assert obs.shape == (3, *vector_shape(vec)) and obs.dtype == np.float32
    assert all(info["step"] == 0 for info in vec.reset_infos)
    # Seeds as SB3 sets them (seed + index) choose the same users as single environments.
    single = SimulatedUserEnv(tiny_dataset(), env_config(), engine=engine, model=fake)
    users = [single.reset(seed=7 + n)[1]["user_id"] for n in range(3)]
    assert [info["user_id"] for info in vec.reset_infos] == users
    assert executor.batches == [3]  # the three resets went as one batch
    single.close()
    vec.close()


def test_a_step_is_one_batch_and_ended_episodes_reset_within_it(
    engine: Engine, fake: FakeChatModel
) -> None:
    vec, executor = _sb3(engine, fake, max_steps=2)
    vec.reset()
    executor.batches.clear()
    _, rewards, dones, infos = vec.step(np.array([[20, 21, 22], [23, 24, 25], [26, 27, 28]]))
    assert executor.batches == [3] and not dones.any()
    assert isinstance(infos, list) and len(infos) == 3 and all(i["step"] == 1 for i in infos)
    assert rewards.dtype == np.float32 and (rewards > 0).all()
    assert not any(i["TimeLimit.truncated"] for i in infos)
    next_obs, rewards, dones, infos = vec.step(np.array([[29, 30, 31]] * 3))
    obs = np.asarray(next_obs)
    # max_steps=2: every episode was truncated, and reset in a second batch of the same step.
    assert executor.batches == [3, 3, 3] and dones.all()
    for n, info in enumerate(infos):
        assert info["TimeLimit.truncated"] and info["step"] == 2
        terminal = info["terminal_observation"]
        assert terminal.shape == obs[n].shape and terminal[-1] == 1.0  # progress 2/2
        assert obs[n][-1] == 0.0  # the new episode's first observation
        assert vec.reset_infos[n]["step"] == 0
    vec.close()


def test_a_bad_action_moves_no_user(engine: Engine, fake: FakeChatModel) -> None:
    vec, _ = _sb3(engine, fake)
    vec.reset()
    before = vec.action_masks().copy()
    with pytest.raises(ValueError, match="action 2"):
        vec.step(np.array([[20, 21, 22], [23, 24, 25], [26, 27, N_ITEMS]]))
    np.testing.assert_array_equal(vec.action_masks(), before)
    vec.close()


def test_masks_are_what_sb3_contrib_reads(engine: Engine, fake: FakeChatModel) -> None:
    vec, _ = _sb3(engine, fake)
    monitored = VecMonitor(vec)
    monitored.reset()
    assert is_masking_supported(monitored)
    masks = get_action_masks(monitored)
    assert masks.shape == (3, 3 * N_ITEMS) and masks.dtype == np.bool_
    items = np.stack(vec.env_method("action_mask")).astype(np.bool_)
    np.testing.assert_array_equal(masks.reshape(3, 3, N_ITEMS), np.stack([items] * 3, axis=1))
    monitored.close()


def test_single_item_mode_takes_one_index_per_user(engine: Engine, fake: FakeChatModel) -> None:
    vec, _ = _sb3(engine, fake, single_item=True, slate_size=1, max_steps=3)
    assert vec.action_space == spaces.Discrete(N_ITEMS)
    assert vec.env_is_wrapped(SingleItemEnv) == [True, True, True]
    vec.reset()
    masks = get_action_masks(vec)
    assert masks.shape == (3, N_ITEMS)
    actions = np.array([int(np.flatnonzero(m)[0]) for m in masks])
    _, rewards, _, infos = vec.step(actions)
    assert [i["slate"].tolist() for i in infos] == [[a] for a in actions]
    assert (rewards > 0).all()
    # The items just shown are masked now.
    assert not get_action_masks(vec)[np.arange(3), actions].any()
    vec.close()


def test_get_and_set_attr_reach_each_user(engine: Engine, fake: FakeChatModel) -> None:
    vec, _ = _sb3(engine, fake)
    assert vec.get_attr("render_mode") == [None] * 3
    vec.set_attr("marker", 5, indices=[1])
    assert vec.get_attr("marker", indices=1) == [5]
    with pytest.raises(AttributeError):
        vec.get_attr("marker", indices=0)
    vec.close()
