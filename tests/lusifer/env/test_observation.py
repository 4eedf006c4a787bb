"""The observation layout and the profile encoders."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import Engine

from lusifer.core.errors import ConfigurationError
from lusifer.env import HashingEncoder, SimulatedUserEnv
from lusifer.env.catalog import Catalog
from lusifer.env.observation import ObservationBuilder
from lusifer.llm import FakeChatModel
from tests.lusifer.env.conftest import GENRES, env_config, tiny_dataset


def test_item_features_are_year_then_genres() -> None:
    catalog = Catalog.from_dataset(tiny_dataset(), "f1")
    assert catalog.genres == tuple(sorted(GENRES))
    assert catalog.item_ids[0] == 1 and catalog.index_of[40] == 39
    # Item 1: year 1981 of 1980..1999, genre GENRES[1] (Drama).
    assert catalog.features[0, 0] == pytest.approx(1 / 19)
    assert catalog.features[0, 1:].tolist() == [0, 1, 0, 0]  # Comedy, Drama, Horror, Sci-Fi
    assert catalog.rated_mask(1)[:12].all() and not catalog.rated_mask(1)[12:].any()


def test_the_layout_right_aligns_recent_ratings() -> None:
    features = np.array([[0.5, 1, 0], [0.25, 0, 1]], dtype=np.float32)
    builder = ObservationBuilder(features, window=3, encoder=HashingEncoder(8))
    layout = builder.layout
    assert (layout.slot_size, layout.size) == (5, 3 * 5 + 8 + 1)
    obs = builder.build([(0, 5), (1, 1)], "likes comedies", step=2, max_steps=8)
    slots = obs[layout.recent].reshape(3, 5)
    assert slots[0].tolist() == [0, 0, 0, 0, 0]
    assert slots[1].tolist() == [1, 1.0, 0.5, 1, 0]
    assert slots[2].tolist() == [1, 0.0, 0.25, 0, 1]
    assert obs[layout.progress].tolist() == [0.25]
    np.testing.assert_array_equal(obs[layout.profile], HashingEncoder(8)("likes comedies"))


def test_the_hashing_encoder_is_deterministic_and_normalised() -> None:
    encoder = HashingEncoder(32)
    a = encoder("Enjoys science fiction, dislikes horror.")
    assert a.dtype == np.float32 and a.shape == (32,)
    assert np.linalg.norm(a) == pytest.approx(1.0)
    np.testing.assert_array_equal(a, HashingEncoder(32)("enjoys SCIENCE fiction dislikes horror"))
    assert not np.array_equal(a, encoder("Enjoys comedies."))
    assert not encoder("").any()
    with pytest.raises(ConfigurationError):
        HashingEncoder(0)


class _Constant:
    dim = 3

    def __call__(self, text: str) -> np.ndarray:
        return np.array([2.0, -0.5, len(text) > 0])


def test_a_pluggable_encoder_or_none(engine: Engine, fake: FakeChatModel) -> None:
    dataset, config = tiny_dataset(), env_config()
    env = SimulatedUserEnv(dataset, config, engine=engine, model=fake, profile_encoder=_Constant())
    obs, _ = env.reset(options={"user_id": 1})
    layout = env.sim.observations.layout
    assert obs[layout.profile].tolist() == [1.0, -0.5, 1.0]  # clipped to [-1, 1]
    bare = SimulatedUserEnv(dataset, config, engine=engine, model=fake, profile_encoder=None)
    assert bare.observation_space.shape == (layout.size - 3,)


def test_an_encoder_of_the_wrong_size_is_a_configuration_error() -> None:
    class Liar:
        dim = 4

        def __call__(self, text: str) -> np.ndarray:
            return np.zeros(2)

    builder = ObservationBuilder(np.zeros((1, 1), dtype=np.float32), 2, Liar())
    with pytest.raises(ConfigurationError, match="shape"):
        builder.build([], "x", 0, 1)
