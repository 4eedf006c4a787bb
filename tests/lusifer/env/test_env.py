"""SimulatedUserEnv with the fake LLM: the Gymnasium API, the mask, rewards, ends, profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env
from sqlalchemy import Engine
from sqlmodel import Session, select

from lusifer.core.errors import DataError, OutputValidationError, PermanentLLMError
from lusifer.env import SimulatedUserEnv
from lusifer.env.store import profile_history
from lusifer.llm import FakeChatModel
from lusifer.store.engines import session_scope
from lusifer.store.tables import CallUse, EnvProfileUpdate, EnvStepRequest, ProfileStep
from tests.lusifer.env.conftest import (
    HISTORY,
    MakeEnv,
    env_config,
    fake_answer,
    fake_rating,
    tiny_dataset,
)


def test_check_env_passes(make_env: MakeEnv) -> None:
    check_env(make_env(), skip_render_check=True)


def test_reset_starts_an_episode_from_a_built_profile(
    make_env: MakeEnv, fake: FakeChatModel
) -> None:
    env = make_env()
    obs, info = env.reset(seed=0, options={"user_id": 1})
    assert obs in env.observation_space
    assert info["user_id"] == 1 and info["step"] == 0
    # 10 of the 12 training ratings, in batches of 5: a first profile, then one update.
    assert len(fake.requests) == 2
    assert info["profile"] == "A viewer profile written from 5 ratings."
    [initial] = info["profile_history"]
    assert initial["source"] == "built" and initial["step"] == 0
    assert initial["item_ids"] == list(range(HISTORY - 9, HISTORY + 1))
    # Training items (1..12 for user 1) are masked, the others allowed.
    mask = info["action_mask"]
    assert mask.dtype == np.int8 and mask.shape == (40,)
    assert mask[:HISTORY].sum() == 0 and mask[HISTORY:].all()


def test_the_seed_chooses_the_user(make_env: MakeEnv) -> None:
    env = make_env()
    chosen = {seed: env.reset(seed=seed)[1]["user_id"] for seed in range(12)}
    assert chosen == {seed: env.reset(seed=seed)[1]["user_id"] for seed in range(12)}
    assert set(chosen.values()) == {1, 2, 3}


def test_a_user_without_history_is_refused(make_env: MakeEnv) -> None:
    with pytest.raises(DataError, match="no training ratings"):
        make_env().reset(options={"user_id": 99})


@pytest.mark.parametrize(
    ("reward", "expected"),
    [
        # Slate: item 24 (rated 5), item 25 (rated 1), item 1 (rated in training: masked).
        ("mean_rating", (5 + 1) / 2 - 0.5),
        ("count_ge_4", 1 - 0.5),
        ("sum_centered", (5 - 3) + (1 - 3) - 0.5),
    ],
)
def test_reward_definitions(make_env: MakeEnv, reward: str, expected: float) -> None:
    env = make_env(reward=reward, invalid_penalty=0.5)
    env.reset(options={"user_id": 1})
    _, got, terminated, truncated, info = env.step(np.array([23, 24, 0]))
    assert fake_rating(24) == 5 and fake_rating(25) == 1
    assert got == pytest.approx(expected)
    assert info["ratings"].tolist() == [5, 1, 0]
    assert info["valid"].tolist() == [True, True, False]
    assert not terminated and not truncated


def test_a_custom_reward_function(engine: Engine, fake: FakeChatModel) -> None:
    env = SimulatedUserEnv(
        tiny_dataset(),
        env_config(),
        engine=engine,
        model=fake,
        reward_fn=lambda ratings: float(max(ratings, default=0)),
    )
    env.reset(options={"user_id": 1})
    assert env.step(np.array([22, 23, 24]))[1] == 5.0  # items 23, 24, 25 rate 4, 5, 1


def test_masked_items_are_not_shown_and_shown_items_become_masked(
    make_env: MakeEnv, fake: FakeChatModel
) -> None:
    env = make_env()
    env.reset(options={"user_id": 1})
    before = len(fake.requests)
    # A repeat within the slate is masked too.
    _, reward, *_, info = env.step(np.array([20, 20, 3]))
    rating_request = fake.requests[before]
    assert '<item id="21">' in rating_request.messages[-1][1]
    assert '<item id="4">' not in rating_request.messages[-1][1]
    assert info["valid"].tolist() == [True, False, False]
    assert reward == pytest.approx(fake_rating(21) - 2 * 1.0)
    assert info["action_mask"][20] == 0
    # A slate of masked items only makes no rating call.
    calls = len(fake.requests)
    _, reward, *_, info = env.step(np.array([20, 0, 1]))
    assert reward == pytest.approx(-3.0)
    assert info["ratings"].tolist() == [0, 0, 0]
    # update_every=1: the update had no new ratings to learn from, so no call at all.
    assert len(fake.requests) == calls


def test_sampling_with_the_mask_never_picks_a_masked_item(make_env: MakeEnv) -> None:
    env = make_env(max_steps=8)
    _, info = env.reset(seed=3, options={"user_id": 2})
    env.action_space.seed(3)
    shown: set[int] = set()
    for _ in range(8):
        mask = info["action_mask"]
        action = env.action_space.sample(mask=(mask,) * 3)
        assert all(mask[action] == 1)
        if len(set(action.tolist())) < 3:  # the sampler may repeat an item within a slate
            continue
        assert not shown & set(action.tolist())
        shown |= set(action.tolist())
        _, reward, _, truncated, info = env.step(action)
        assert info["valid"].all() and reward >= 1.0
        if truncated:
            break


def test_an_out_of_range_slate_is_an_error(make_env: MakeEnv) -> None:
    env = make_env()
    env.reset(options={"user_id": 1})
    with pytest.raises(ValueError, match="item indices"):
        env.step(np.array([1, 2, 40]))
    with pytest.raises(ValueError, match="item indices"):
        env.step(np.array([1, 2]))


def test_truncation_at_the_step_budget_then_reset_is_needed(make_env: MakeEnv) -> None:
    env = make_env(max_steps=2)
    env.reset(options={"user_id": 1})
    assert env.step(np.array([20, 21, 22]))[3] is False
    *_, terminated, truncated, _ = env.step(np.array([23, 24, 25]))
    assert truncated is True and terminated is False
    with pytest.raises(ResetNeeded):
        env.step(np.array([26, 27, 28]))


def test_the_user_leaves_after_disappointing_slates(make_env: MakeEnv) -> None:
    env = make_env(leave_below=2.5, leave_patience=2, max_steps=10)
    env.reset(options={"user_id": 1})
    # Item i rates 1 + i % 5; a slate names item i by index i - 1.
    assert env.step(np.array([19, 24, 25]))[2] is False  # 1, 1, 2: low, once
    assert env.step(np.array([22, 23, 28]))[2] is False  # 4, 5, 5: the streak ends
    assert env.step(np.array([29, 34, 35]))[2] is False  # 1, 1, 2: low, once
    _, _, terminated, truncated, info = env.step(np.array([39, 30, 20]))  # 1, 2, 2: twice
    assert terminated is True and truncated is False and info["left"] is True
    with pytest.raises(ResetNeeded):
        env.step(np.array([26, 27, 28]))


def test_the_profile_is_updated_every_n_steps_and_stored(make_env: MakeEnv, engine: Engine) -> None:
    env = make_env(update_every=2, max_steps=6)
    env.reset(options={"user_id": 2})
    slates = [[20, 21, 22], [23, 24, 25], [26, 27, 28], [29, 30, 31]]
    lengths = []
    for slate in slates:
        *_, info = env.step(np.array(slate))
        lengths.append(len(info["profile_history"]))
        assert info["profile_updated"] is (len(lengths) % 2 == 0)
    assert lengths == [1, 2, 2, 3]
    history = info["profile_history"]
    assert [h["step"] for h in history] == [0, 2, 4]
    assert [h["source"] for h in history] == ["built", "update", "update"]
    # An update reads the ratings of the steps since the last one: six items.
    assert history[1]["item_ids"] == [i + 1 for i in slates[0] + slates[1]]
    assert history[1]["profile"] == "A viewer profile written from 6 ratings."
    assert history[1]["explanation"] == "saw 6 more"
    assert info["profile"] == history[-1]["profile"]
    stored = profile_history(engine, env.episode_id or "")
    assert [v.as_info() for v in stored] == history


def test_every_call_is_recorded_against_the_environment(
    make_env: MakeEnv, engine: Engine, fake: FakeChatModel
) -> None:
    env = make_env()
    env.reset(seed=1)
    env.step(np.array([20, 21, 22]))
    with Session(engine) as session:
        uses = session.exec(select(CallUse)).all()
    assert len(uses) == len(fake.requests) == 4  # two build steps, one rating, one update
    assert {u.run_id for u in uses} == {env.sim.spec_id}


def test_a_second_identical_episode_is_answered_from_the_cache(
    make_env: MakeEnv, fake: FakeChatModel
) -> None:
    env = make_env()
    transitions = []
    for _ in range(2):
        env.reset(options={"user_id": 3})
        transitions.append(env.step(np.array([20, 21, 22])))
    assert len(fake.requests) == 4
    assert transitions[0][1] == transitions[1][1]
    np.testing.assert_array_equal(transitions[0][0], transitions[1][0])


def test_initial_profiles_come_from_a_finished_run(
    make_env: MakeEnv, engine: Engine, fake: FakeChatModel
) -> None:
    with session_scope(engine) as session:
        for step, text in enumerate(["first profile of user 2", "final profile of user 2"]):
            session.add(
                ProfileStep(
                    run_id="run-a",
                    fold="f1",
                    user_id=2,
                    step=step,
                    item_ids_json=json.dumps([step]),
                    profile=text,
                    explanation=f"why {step}",
                    call_key=f"key-{step}",
                )
            )
    env = make_env(run_id="run-a")
    _, info = env.reset(options={"user_id": 2})
    assert fake.requests == []
    assert info["profile_history"] == [
        {
            "step": 0,
            "source": "run",
            "profile": "final profile of user 2",
            "explanation": "why 1",
            "call_key": "key-1",
            "item_ids": [1],
        }
    ]
    # A user the run lacks gets a profile built on demand.
    assert env.reset(options={"user_id": 1})[1]["profile_history"][0]["source"] == "built"


def test_an_unusable_first_profile_fails_the_reset(engine: Engine) -> None:
    garbage = FakeChatModel(lambda _request: "{")
    env = SimulatedUserEnv(tiny_dataset(), env_config(), engine=engine, model=garbage)
    with pytest.raises(OutputValidationError, match="failed"):
        env.reset(options={"user_id": 1})
    with Session(engine) as session:
        [row] = session.exec(select(EnvStepRequest)).all()
    assert row.state == "failed" and row.error_kind == "output"


def test_unrated_items_count_in_no_reward(engine: Engine) -> None:
    def lazy(request):  # type: ignore[no-untyped-def]
        answer = json.loads(fake_answer(request))
        return json.dumps({k: v for k, v in answer.items() if k != "22"})

    env = SimulatedUserEnv(
        tiny_dataset(), env_config(max_reask=1), engine=engine, model=FakeChatModel(lazy)
    )
    env.reset(options={"user_id": 1})
    _, reward, *_, info = env.step(np.array([20, 21, 22]))
    assert info["ratings"].tolist() == [fake_rating(21), 0, fake_rating(23)]
    assert info["missing"] == 1 and info["reasks"] == 1
    assert reward == pytest.approx((fake_rating(21) + fake_rating(23)) / 2)


def test_the_render_shows_the_profile(engine: Engine, fake: FakeChatModel) -> None:
    env = SimulatedUserEnv(
        tiny_dataset(), env_config(), engine=engine, model=fake, render_mode="ansi"
    )
    env.reset(options={"user_id": 1})
    text = env.render()
    assert text is not None and "user 1" in text and "profile:" in text


def test_profile_rows_are_written_once_per_step(make_env: MakeEnv, engine: Engine) -> None:
    env = make_env(update_every=1)
    env.reset(options={"user_id": 1})
    env.step(np.array([20, 21, 22]))
    with Session(engine) as session:
        rows = session.exec(select(EnvProfileUpdate.step)).all()
    assert sorted(rows) == [0, 1]


def test_a_failed_step_ends_the_episode(engine: Engine) -> None:
    def flaky(request):  # type: ignore[no-untyped-def]
        if request.schema_name == "ratings":
            raise PermanentLLMError("the key was refused")
        return fake_answer(request)

    env = SimulatedUserEnv(tiny_dataset(), env_config(), engine=engine, model=FakeChatModel(flaky))
    env.reset(options={"user_id": 1})
    with pytest.raises(PermanentLLMError, match="refused"):
        env.step(np.array([20, 21, 22]))
    with pytest.raises(ResetNeeded):
        env.step(np.array([23, 24, 25]))
    assert env.reset(options={"user_id": 1})[1]["step"] == 0
