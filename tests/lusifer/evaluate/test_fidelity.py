"""Fidelity statistics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lusifer.evaluate.fidelity import (
    confusion_matrix,
    fidelity,
    kl_divergence,
    per_user_correlation,
    positivity_bias,
    rating_counts,
    rating_shares,
    wasserstein,
)

# real = [1, 3, 4, 5, 5], sim = [2, 4, 4, 5, 5], users = [1, 1, 1, 2, 2]
#   counts       real [1,0,1,1,2]  sim [0,1,0,2,2]
#   means        real 18/5 = 3.6   sim 20/5 = 4.0   -> positivity bias +0.4
#   variances    real (6.76+0.36+0.16+1.96+1.96)/5 = 2.24   sim (4+0+0+1+1)/5 = 1.2
#   Wasserstein  equal sizes: mean |sorted real - sorted sim| = (1+1+0+0+0)/5 = 0.4
#   KL, alpha .5 p = [1.5,.5,1.5,1.5,2.5]/7.5 = [.2, 1/15, .2, .2, 1/3]
#                q = [.5,1.5,.5,2.5,2.5]/7.5 = [1/15, .2, 1/15, 1/3, 1/3]
#                KL = .2 ln3 + (1/15) ln(1/3) + .2 ln3 + .2 ln(.6) + 0 = (1/3) ln3 + .2 ln .6
#   per user     user 1: real [1,3,4], sim [2,4,4]: dt = [-5/3, 1/3, 4/3], dp = [-4/3, 2/3, 2/3]
#                sum dt*dp = 30/9, sum dt^2 = 42/9, sum dp^2 = 24/9
#                -> r = 30/sqrt(42*24) = 10/sqrt(112)
#                user 2 has 2 ratings (< 3): left out
REAL = [1, 3, 4, 5, 5]
SIM = [2, 4, 4, 5, 5]
USERS = [1, 1, 1, 2, 2]


def test_counts_and_shares_by_hand() -> None:
    assert rating_counts(REAL).tolist() == [1, 0, 1, 1, 2]
    assert rating_counts(SIM).tolist() == [0, 1, 0, 2, 2]
    assert rating_shares(REAL).tolist() == pytest.approx([0.2, 0.0, 0.2, 0.2, 0.4])


def test_counts_round_and_clip_continuous_values() -> None:
    # 0.2 -> 1 (clipped), 2.5 -> 2 (half to even), 3.6 -> 4, 6.1 -> 5 (clipped)
    assert rating_counts([0.2, 2.5, 3.6, 6.1]).tolist() == [1, 1, 0, 1, 1]


def test_shares_of_nothing_are_nan() -> None:
    assert all(math.isnan(x) for x in rating_shares([]))


def test_wasserstein_by_hand() -> None:
    assert wasserstein(REAL, SIM) == pytest.approx(0.4)
    assert wasserstein(REAL, REAL) == 0.0


def test_kl_by_hand() -> None:
    expected = math.log(3) / 3 + 0.2 * math.log(0.6)
    assert kl_divergence(REAL, SIM) == pytest.approx(expected)
    assert kl_divergence(REAL, REAL) == pytest.approx(0.0)


def test_kl_stays_finite_when_the_simulator_never_uses_a_star() -> None:
    assert math.isfinite(kl_divergence([1, 5], [3, 3]))


def test_confusion_matrix_by_hand() -> None:
    m = confusion_matrix(REAL, SIM)
    expected = np.zeros((5, 5), dtype=int)
    expected[0, 1] = 1  # real 1, sim 2
    expected[2, 3] = 1  # real 3, sim 4
    expected[3, 3] = 1  # real 4, sim 4
    expected[4, 4] = 2  # real 5, sim 5
    assert m.tolist() == expected.tolist()
    assert m.sum() == 5


def test_per_user_correlation_by_hand() -> None:
    r, n = per_user_correlation(USERS, REAL, SIM)
    assert n == 1
    assert r == pytest.approx(10 / math.sqrt(112))


def test_per_user_correlation_skips_constant_users() -> None:
    users = [1, 1, 1, 2, 2, 2]
    real = [1, 2, 3, 1, 2, 3]
    sim = [1, 2, 3, 4, 4, 4]  # user 2's simulated ratings are constant: r undefined
    assert per_user_correlation(users, real, sim) == (pytest.approx(1.0), 1)
    assert math.isnan(per_user_correlation([1, 1], [1, 2], [1, 2])[0])


def test_positivity_bias_by_hand() -> None:
    assert positivity_bias(REAL, SIM) == pytest.approx(0.4)


def test_fidelity_collects_everything() -> None:
    f = fidelity(USERS, REAL, SIM)
    assert f.n == 5
    assert f.real_mean == pytest.approx(3.6)
    assert f.sim_mean == pytest.approx(4.0)
    assert f.real_var == pytest.approx(2.24)
    assert f.sim_var == pytest.approx(1.2)
    assert f.wasserstein == pytest.approx(0.4)
    assert f.positivity_bias == pytest.approx(0.4)
    assert f.per_user_n == 1
    assert f.sim_shares == pytest.approx((0.0, 0.2, 0.0, 0.4, 0.4))
    assert f.confusion[4][4] == 2


def test_fidelity_of_nothing_is_nan() -> None:
    f = fidelity([], [], [])
    assert f.n == 0
    assert math.isnan(f.real_mean)
    assert math.isnan(f.wasserstein)
    assert math.isnan(f.kl)
