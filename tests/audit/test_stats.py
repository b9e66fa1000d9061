"""Each statistic on synthetic distributions whose answer is known in closed form."""

import numpy as np
import pytest
from scipy.stats import norm

from cosynth.audit.stats import (
    compare_categorical,
    compare_numeric,
    rank_auc,
    shortcut_auc,
    standardised_mean_difference,
)


def test_smd_exact_on_small_samples():
    # means 2 and 0, sample variances 2.5 and 2.5 -> d = 2 / sqrt(2.5)
    a, b = np.array([0, 1, 2, 3, 4.0]), np.array([-2, -1, 0, 1, 2.0])
    assert standardised_mean_difference(a, b) == pytest.approx(2 / np.sqrt(2.5))
    assert standardised_mean_difference(b, a) == pytest.approx(-2 / np.sqrt(2.5))


def test_smd_of_unit_shift_is_one():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 20000), rng.normal(0, 1, 20000)
    assert standardised_mean_difference(a, b) == pytest.approx(1.0, abs=0.03)


def test_rank_auc_known_values():
    assert rank_auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert rank_auc([0, 1, 2], [3, 4, 5]) == 0.0
    assert rank_auc([1, 1], [1, 1]) == 0.5  # all ties
    # normal shift d with unit variances: AUC = Phi(d / sqrt 2)
    rng = np.random.default_rng(1)
    a, b = rng.normal(1, 1, 20000), rng.normal(0, 1, 20000)
    assert rank_auc(a, b) == pytest.approx(norm.cdf(1 / np.sqrt(2)), abs=0.01)


def test_ks_wasserstein_on_shifted_uniforms():
    grid = (np.arange(1000) + 0.5) / 1000  # U(0,1) quantiles, exact
    r = compare_numeric(grid + 0.5, grid)
    assert r["ks_statistic"] == pytest.approx(0.5, abs=2e-3)
    assert r["wasserstein"] == pytest.approx(0.5, abs=1e-9)  # a pure shift moves every quantile by 0.5
    assert r["ks_pvalue"] < 1e-50
    assert r["ad_pvalue"] == pytest.approx(0.001) and r["ad_pvalue_capped"]
    assert r["mean_a"] - r["mean_b"] == pytest.approx(0.5)


def test_same_distribution_p_values_are_calibrated():
    # under the null, p < 0.05 should happen about 5 % of the time, for both tests
    rng = np.random.default_rng(2)
    results = [compare_numeric(rng.normal(size=200), rng.normal(size=200)) for _ in range(200)]
    ks_rate = np.mean([r["ks_pvalue"] < 0.05 for r in results])
    ad_rate = np.mean([r["ad_pvalue"] < 0.05 for r in results])
    assert 0.01 <= ks_rate <= 0.10 and 0.01 <= ad_rate <= 0.10
    assert abs(np.mean([r["smd"] for r in results])) < 0.02
    assert abs(np.mean([r["rank_auc"] for r in results]) - 0.5) < 0.01


def test_nan_are_ignored_and_tiny_groups_are_reported():
    r = compare_numeric([1, 2, np.nan, 3, 4, 5], [1, 2, 3, 4, 5, np.nan])
    assert r["n_a"] == 5 and r["n_b"] == 5 and r["ks_statistic"] == 0
    tiny = compare_numeric([1, 2], [3, 4, 5, 6, 7])
    assert np.isnan(tiny["ks_pvalue"]) and "fewer than" in tiny["note"]
    const = compare_numeric([2.0] * 6, [2.0] * 6)
    assert const["ad_pvalue"] == 1.0 and const["wasserstein"] == 0


def test_categorical_identical_and_disjoint():
    same = compare_categorical(["cubic"] * 10 + ["hexagonal"] * 10, ["cubic"] * 20 + ["hexagonal"] * 20)
    assert same["total_variation"] == pytest.approx(0) and same["cramers_v"] == pytest.approx(0, abs=1e-9)
    disjoint = compare_categorical(["cubic"] * 30, ["triclinic"] * 30)
    assert disjoint["total_variation"] == pytest.approx(1.0)
    assert disjoint["cramers_v"] > 0.9 and disjoint["chi2_pvalue"] < 1e-10


def test_shortcut_auc_separable_random_and_non_monotone():
    rng = np.random.default_rng(3)
    y = np.repeat([1, 0], 500)
    separable = np.where(y == 1, rng.uniform(0, 1, 1000), rng.uniform(2, 3, 1000))
    assert shortcut_auc(separable, y)["auc"] > 0.99
    noise = rng.normal(size=1000)
    assert abs(shortcut_auc(noise, y)["auc"] - 0.5) < 0.06
    # negatives on both sides of the positives: the rank AUC sees nothing, the shortcut sees it all
    x = np.where(y == 1, rng.uniform(-1, 1, 1000), rng.choice([-1, 1], 1000) * rng.uniform(1.5, 3, 1000))
    assert abs(rank_auc(x[y == 1], x[y == 0]) - 0.5) < 0.05
    assert shortcut_auc(x, y)["auc"] > 0.95


def test_shortcut_auc_grouped_folds_stop_memorising_groups():
    # each group has one label and one random descriptor value: a descriptor that identifies
    # the group leaks its label unless folds keep groups together
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(100), 10)
    y = np.repeat(rng.integers(0, 2, 100), 10)
    x = np.repeat(rng.normal(size=(100, 2)), 10, axis=0)  # two columns: the tree ensemble is used
    assert shortcut_auc(x, y)["auc"] > 0.9
    grouped = shortcut_auc(x, y, groups=groups)
    assert grouped["grouped"] and abs(grouped["auc"] - 0.5) < 0.15


def test_shortcut_auc_needs_two_classes_and_is_deterministic():
    assert np.isnan(shortcut_auc(np.arange(10.0), np.ones(10))["auc"])
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=300), rng.integers(0, 2, 300)
    assert shortcut_auc(x, y, seed=7) == shortcut_auc(x, y, seed=7)
