"""Single-item mode and the slate's sb3-contrib mask: spaces, masks, repeats, the checkers."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from lusifer.core.errors import ConfigurationError
from lusifer.env import SingleItemEnv
from tests.lusifer.env.conftest import HISTORY, N_ITEMS, MakeEnv, fake_rating


def test_single_item_mode_is_a_discrete_action_over_the_items(make_env: MakeEnv) -> None:
    env = SingleItemEnv(make_env(slate_size=1))
    assert env.action_space == spaces.Discrete(N_ITEMS)
    env.reset(options={"user_id": 1})
    _, reward, _, _, info = env.step(np.int64(23))  # item id 24
    assert info["slate"].tolist() == [23] and reward == fake_rating(24)
    masks = env.action_masks()
    assert masks.dtype == np.bool_ and masks.shape == (N_ITEMS,)
    # Training items (1..12) and the item just shown are masked.
    assert not masks[:HISTORY].any() and not masks[23] and masks[HISTORY:23].all()
    # The int8 form in info is what Discrete.sample(mask=...) takes.
    for _ in range(20):
        assert masks[env.action_space.sample(mask=info["action_mask"])]


def test_single_item_mode_penalises_a_masked_item(make_env: MakeEnv) -> None:
    env = SingleItemEnv(make_env(slate_size=1, invalid_penalty=0.5))
    env.reset(options={"user_id": 1})
    _, reward, _, _, info = env.step(np.int64(0))  # rated in training
    assert reward == -0.5 and info["valid"].tolist() == [False]


def test_single_item_mode_needs_slate_size_one(make_env: MakeEnv) -> None:
    with pytest.raises(ConfigurationError, match="set slate_size=1"):
        SingleItemEnv(make_env(slate_size=3))


def test_single_item_mode_refuses_an_action_out_of_range(make_env: MakeEnv) -> None:
    env = SingleItemEnv(make_env(slate_size=1))
    env.reset(options={"user_id": 1})
    with pytest.raises(ValueError, match="one item index"):
        env.step(np.int64(N_ITEMS))


def test_slate_masks_are_the_item_mask_tiled_per_slot(make_env: MakeEnv) -> None:
    env = make_env(slate_size=3)
    env.reset(options={"user_id": 1})
    masks = env.action_masks()
    item_mask = env.action_mask().astype(np.bool_)
    assert masks.dtype == np.bool_ and masks.shape == (3 * N_ITEMS,)
    np.testing.assert_array_equal(masks.reshape(3, N_ITEMS), np.stack([item_mask] * 3))


def test_a_repeat_within_a_slate_is_shown_once_and_penalised(make_env: MakeEnv) -> None:
    env = make_env(slate_size=3, invalid_penalty=0.5)
    env.reset(options={"user_id": 1})
    _, reward, _, _, info = env.step(np.array([23, 23, 24]))
    assert info["valid"].tolist() == [True, False, True]
    assert info["repeated"].tolist() == [False, True, False]
    assert info["ratings"].tolist() == [5, 0, 1]
    assert reward == pytest.approx((5 + 1) / 2 - 0.5)


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
@pytest.mark.parametrize("mode", ["slates", "single item"])
def test_the_checkers_of_gymnasium_and_sb3_pass(make_env: MakeEnv, mode: str) -> None:
    if mode == "slates":
        sb3_check_env(make_env(slate_size=3))
    else:
        sb3_check_env(SingleItemEnv(make_env(slate_size=1)))
        gymnasium_check_env(SingleItemEnv(make_env(slate_size=1)), skip_render_check=True)
