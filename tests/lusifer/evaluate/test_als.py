"""Explicit-feedback ALS: recovers a low-rank matrix, is seeded, handles unseen ids."""

from __future__ import annotations

import numpy as np
import pytest

from lusifer.evaluate.als import fit_als, tune_reg


def _grid(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    users, items = np.meshgrid(
        np.arange(matrix.shape[0]), np.arange(matrix.shape[1]), indexing="ij"
    )
    return users.ravel() + 100, items.ravel() + 500, matrix.ravel()


def test_recovers_a_fully_observed_low_rank_matrix() -> None:
    rng = np.random.default_rng(0)
    matrix = 3.0 + rng.normal(0, 0.5, (30, 2)) @ rng.normal(0, 0.5, (2, 40))
    u, i, r = _grid(matrix)
    model = fit_als(u, i, r, n_factors=4, reg=1e-4, n_iters=30, rating_range=(-10.0, 10.0))
    fitted = model.predict(u, i)
    assert np.sqrt(np.mean((fitted - r) ** 2)) < 0.01


def test_a_constant_matrix_is_its_mean() -> None:
    u, i, r = _grid(np.full((5, 6), 4.0))
    model = fit_als(u, i, r, n_factors=2)
    assert model.mu == 4.0
    assert model.predict(u, i) == pytest.approx(np.full(30, 4.0), abs=1e-9)


def test_unseen_users_and_items_fall_back_on_known_biases() -> None:
    rng = np.random.default_rng(1)
    u, i, r = _grid(rng.integers(1, 6, (8, 9)).astype(float))
    model = fit_als(u, i, r, n_factors=3)
    item = 503
    k = model.item_index[item]
    expected_unknown_user = np.clip(model.mu + model.item_bias[k], 1, 5)
    assert model.predict([9999], [item])[0] == pytest.approx(expected_unknown_user)
    assert model.predict([9999], [9999])[0] == pytest.approx(model.mu)


def test_predictions_are_clipped_to_the_rating_range() -> None:
    u, i, r = _grid(np.array([[1.0, 5.0], [5.0, 1.0]]))
    pred = fit_als(u, i, r, n_factors=2, reg=1e-6, n_iters=20).predict(u, i)
    assert pred.min() >= 1.0 and pred.max() <= 5.0


def test_same_seed_same_model() -> None:
    rng = np.random.default_rng(2)
    u, i, r = _grid(rng.integers(1, 6, (10, 12)).astype(float))
    a = fit_als(u, i, r, seed=7).predict(u, i)
    b = fit_als(u, i, r, seed=7).predict(u, i)
    c = fit_als(u, i, r, seed=8).predict(u, i)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_rejects_empty_or_misaligned_input() -> None:
    with pytest.raises(ValueError):
        fit_als([], [], [])
    with pytest.raises(ValueError):
        fit_als([1, 2], [1], [3.0, 4.0])


def test_tune_reg_prefers_strong_penalty_on_pure_noise() -> None:
    # Independent random ratings: nothing to learn beyond the mean, so the largest penalty
    # (closest to predicting the biases alone) predicts held-out ratings best.
    rng = np.random.default_rng(3)
    u, i, r = _grid(rng.integers(1, 6, (40, 50)).astype(float))
    assert tune_reg(u, i, r, candidates=(0.001, 0.5), seed=0, n_factors=5) == 0.5


def test_tune_reg_prefers_weak_penalty_on_a_clean_low_rank_matrix() -> None:
    rng = np.random.default_rng(4)
    matrix = 3.0 + rng.normal(0, 0.6, (40, 3)) @ rng.normal(0, 0.6, (3, 50))
    u, i, r = _grid(matrix)
    chosen = tune_reg(
        u, i, r, candidates=(0.001, 0.5), seed=0, n_factors=3, n_iters=20, rating_range=(-10, 10)
    )
    assert chosen == 0.001


def test_tune_reg_is_seeded_and_needs_ratings_to_hold_out() -> None:
    rng = np.random.default_rng(5)
    u, i, r = _grid(rng.integers(1, 6, (12, 15)).astype(float))
    assert tune_reg(u, i, r, seed=2) == tune_reg(u, i, r, seed=2)
    with pytest.raises(ValueError, match="hold some out"):
        tune_reg([1, 2], [1, 2], [3.0, 4.0], holdout=0.1)
