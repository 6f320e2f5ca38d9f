"""The claim table's statistics on synthetic results with a known answer."""

import numpy as np
import pytest

from idspam.tools import stats


def test_seed_bootstrap_finds_a_real_difference():
    rng = np.random.default_rng(1)
    b = rng.normal(0.80, 0.01, size=5)
    a = b + 0.03 + rng.normal(0, 0.005, size=5)  # A is 3 points better with every seed
    est = stats.seed_bootstrap(a, b)
    assert est.effect == pytest.approx(np.mean(a - b))
    low, high = est.interval(0.95)
    assert 0.02 < low < est.effect < high < 0.04
    assert est.p_value < 0.01
    assert stats.verdict(low, high, paper_sign=+1) == stats.HOLDS
    assert stats.verdict(low, high, paper_sign=-1) == stats.FAILS


def test_seed_bootstrap_without_a_difference_straddles_zero():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.8, 0.02, size=8), rng.normal(0.8, 0.02, size=8)
    low, high = stats.seed_bootstrap(a, b).interval(0.95)
    assert low < 0 < high
    assert stats.verdict(low, high, +1) == stats.INCONCLUSIVE


def test_too_few_seeds_is_inconclusive_even_for_a_large_difference():
    est = stats.seed_bootstrap([0.9, 0.91], [0.5, 0.52])
    assert est.effect == pytest.approx(0.395)
    low, high = est.interval(0.95)
    assert np.isnan(low) and np.isnan(high) and est.p_value == 1.0
    [d] = stats.decide([est], [+1])
    assert d.verdict == stats.INCONCLUSIVE


def test_paired_example_bootstrap_detects_and_rejects():
    rng = np.random.default_rng(3)
    label = rng.integers(0, 2, size=800)
    right = lambda p: np.where(rng.random(800) < p, label, 1 - label)  # noqa: E731
    better, worse = np.stack([right(0.85) for _ in range(2)]), np.stack([right(0.75) for _ in range(2)])
    est = stats.example_bootstrap(better, worse, label, "accuracy", draws=500)
    low, high = est.interval(0.95)
    assert 0.05 < low and high < 0.15 and est.unit == "dev examples"
    same = stats.example_bootstrap(right(0.8)[None], right(0.8)[None], label, "acc_f1", draws=500)
    low, high = same.interval(0.95)
    assert low < 0 < high


def test_metrics_match_their_definitions():
    label = np.array([0, 0, 1, 1, 1])
    pred = np.array([[0, 1, 1, 1, 0]])
    assert stats.accuracy(pred, label)[0] == pytest.approx(0.6)
    f1_0, f1_1 = 2 * 1 / (2 * 1 + 1 + 1), 2 * 2 / (2 * 2 + 1 + 1)
    assert stats.macro_f1(pred, label)[0] == pytest.approx((f1_0 + f1_1) / 2)
    assert stats.acc_f1(pred, label)[0] == pytest.approx((0.6 + (f1_0 + f1_1) / 2) / 2)


def test_holm_levels_step_down_and_stop_at_the_first_failure():
    # sorted p: 0.001 < alpha/4, 0.01 < alpha/3, 0.03 >= alpha/2 (Holm stops), 0.04
    levels = stats.holm_levels([0.04, 0.001, 0.03, 0.01])
    assert levels[1] == pytest.approx(1 - 0.05 / 4)
    assert levels[3] == pytest.approx(1 - 0.05 / 3)
    assert levels[2] == pytest.approx(1 - 0.05 / 2)  # 0.03 >= 0.025: Holm stops here
    assert levels[0] == pytest.approx(1 - 0.05 / 2)  # and later claims keep that level
    assert stats.holm_levels([0.2]) == [pytest.approx(0.95)]


def test_holm_widens_intervals_a_single_test_would_call():
    rng = np.random.default_rng(4)
    b = rng.normal(0.8, 0.01, size=5)
    marginal = stats.seed_bootstrap(b + 0.012 + rng.normal(0, 0.008, size=5), b)
    alone = marginal.interval(0.95)
    family = stats.decide([marginal] + [stats.seed_bootstrap(b, b + rng.normal(0, 0.01, 5)) for _ in range(5)],
                          [+1] * 6)
    assert family[0].level > 0.95
    assert family[0].high - family[0].low > alone[1] - alone[0]
