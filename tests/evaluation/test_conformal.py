"""Split conformal: the exact quantile rank, and the coverage guarantee checked by simulation.

Coverage checks average the empirical test coverage over 200 seeded calibration/test draws. Split
conformal promises ``1 - alpha <= E[coverage] <= 1 - alpha + 1 / (n + 1)`` (the upper bound for
continuous scores); the per-draw coverage has variance about ``alpha (1 - alpha) (1/n_cal + 1/n_test)``,
so the average over R draws is allowed four standard errors either side.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.base import clone

from loopml.errors import InvalidConfig, NotReady, SchemaError
from loopml.evaluation import (
    SplitConformalClassifier,
    SplitConformalRegressor,
    conformal_quantile,
    coverage_report,
)

REPS = 200
K = 4


def _tolerance(alpha: float, n_cal: int, n_test: int, reps: int = REPS) -> float:
    return 4 * np.sqrt(alpha * (1 - alpha) * (1 / n_cal + 1 / n_test) / reps)


def _assert_covers(mean_coverage: float, alpha: float, n_cal: int, n_test: int, label: str) -> None:
    tol = _tolerance(alpha, n_cal, n_test)
    low, high = 1 - alpha - tol, 1 - alpha + 1 / (n_cal + 1) + tol
    assert low <= mean_coverage <= high, (label, alpha, mean_coverage)


def _classification(rng: np.random.Generator, n: int, *, hard_fraction: float = 0.0):
    """A model's probabilities, labels and group; on 'hard' rows labels are much noisier than it thinks."""
    proba = softmax(rng.normal(0, 1.5, size=(n, K)), axis=1)
    hard = rng.uniform(size=n) < hard_fraction
    truth = np.where(hard[:, None], 0.3 * proba + 0.7 / K, softmax(1.3 * np.log(proba), axis=1))
    y = np.minimum((rng.uniform(size=(n, 1)) > np.cumsum(truth, axis=1)).sum(axis=1), K - 1)
    return proba, y, np.where(hard, "hard", "easy")


@pytest.mark.parametrize(
    ("scores", "alpha", "rank"),
    [
        (np.arange(1, 20) / 20, 0.1, 18),  # n=19: ceil(20 * 0.9) = 18
        (np.arange(1, 11) / 10, 0.1, 10),  # n=10: ceil(11 * 0.9) = ceil(9.9) = 10
        (np.arange(1, 10) / 10, 0.2, 8),  # n=9: ceil(10 * 0.8) = 8 exactly, no rounding up to 9
        (np.arange(1, 100) / 100, 0.1, 90),  # n=99: ceil(100 * 0.9) = 90 exactly
        (np.arange(1, 20) / 20, 0.05, 19),  # n=19: ceil(20 * 0.95) = 19 = n, still finite
        (np.arange(1, 19) / 20, 0.05, None),  # n=18: ceil(19 * 0.95) = 19 > n: infinite
        (np.arange(1, 6) / 10, 0.1, None),  # n=5: ceil(6 * 0.9) = 6 > n
    ],
)
def test_quantile_is_the_ceil_n_plus_1_times_1_minus_alpha_th_smallest_score(scores, alpha, rank):
    shuffled = np.random.default_rng(0).permutation(scores)
    expected = np.inf if rank is None else np.sort(scores)[rank - 1]
    assert conformal_quantile(shuffled, alpha) == expected


def test_classifier_threshold_is_that_rank_of_the_lac_scores_and_infinite_means_all_classes():
    # LAC scores 1 - p_true of 9 rows: 0.1 .. 0.9; alpha=0.2 -> the 8th smallest, 0.8
    p_true = 1 - np.arange(1, 10) / 10
    proba = np.column_stack([p_true, 1 - p_true])
    cp = SplitConformalClassifier(alpha=0.2).fit(proba, np.zeros(9, dtype=int))
    assert cp.quantile_ == pytest.approx(0.8) and cp.n_calibration_ == 9
    sets = cp.predict_sets(np.array([[0.25, 0.75], [0.15, 0.85]]))
    assert sets.tolist() == [[True, True], [False, True]]
    tiny = SplitConformalClassifier(alpha=0.1).fit(proba[:5], np.zeros(5, dtype=int))
    assert tiny.quantile_ == np.inf and tiny.predict_sets(np.array([[0.99, 0.01]])).all()


def test_marginal_coverage_matches_1_minus_alpha_for_every_score_and_alpha():
    n_cal = n_test = 500
    variants = {
        "lac": {"score": "lac"},
        "aps": {"score": "aps"},
        "aps_randomized": {"score": "aps", "randomized": True},
    }
    alphas = (0.05, 0.1, 0.2)
    coverage = {(v, a): [] for v in variants for a in alphas}
    sizes = {v: [] for v in variants}
    for seed in range(REPS):
        rng = np.random.default_rng(seed)
        p_cal, y_cal, _ = _classification(rng, n_cal)
        p_test, y_test, _ = _classification(rng, n_test)
        for name, params in variants.items():
            for alpha in alphas:
                cp = SplitConformalClassifier(alpha, seed=seed, **params).fit(p_cal, y_cal)
                report = coverage_report(cp.predict_sets(p_test), y_test)
                coverage[name, alpha].append(report["coverage"])
                if alpha == 0.1:
                    sizes[name].append(report["mean_set_size"])
    for (name, alpha), values in coverage.items():
        _assert_covers(float(np.mean(values)), alpha, n_cal, n_test, name)
    assert all(1 < np.mean(s) < K for s in sizes.values())  # informative sets, not trivially all classes


def test_mondrian_fixes_the_under_coverage_of_the_hard_group():
    alpha, n = 0.1, 1000
    marginal = {"easy": [], "hard": []}
    mondrian = {"easy": [], "hard": []}
    group_sizes = []
    for seed in range(REPS):
        rng = np.random.default_rng(1000 + seed)
        p_cal, y_cal, g_cal = _classification(rng, n, hard_fraction=0.3)
        p_test, y_test, g_test = _classification(rng, n, hard_fraction=0.3)
        plain = SplitConformalClassifier(alpha).fit(p_cal, y_cal)
        per_group = SplitConformalClassifier(alpha).fit(p_cal, y_cal, groups=g_cal)
        assert set(per_group.group_quantiles_) == {"easy", "hard"}
        by_plain = coverage_report(plain.predict_sets(p_test), y_test, groups=g_test)["by_group"]
        by_group = coverage_report(per_group.predict_sets(p_test, groups=g_test), y_test, groups=g_test)[
            "by_group"
        ]
        for g in marginal:
            marginal[g].append(by_plain[g]["coverage"])
            mondrian[g].append(by_group[g]["coverage"])
        group_sizes.append(min(np.sum(g_cal == "hard"), np.sum(g_test == "hard")))
    # the problem: one threshold for all rows over-covers easy rows and under-covers hard ones
    assert np.mean(marginal["hard"]) < 1 - alpha - 0.1
    assert np.mean(marginal["easy"]) > 1 - alpha + 0.03
    n_hard = int(np.min(group_sizes))
    for g in mondrian:
        _assert_covers(float(np.mean(mondrian[g])), alpha, n_hard, n_hard, g)


def test_unseen_and_small_groups_fall_back_to_the_marginal_threshold():
    rng = np.random.default_rng(3)
    proba, y, _ = _classification(rng, 400)
    groups = np.array(["a"] * 300 + ["b"] * 95 + ["c"] * 5)
    cp = SplitConformalClassifier(alpha=0.1, min_group_size=50).fit(proba, y, groups=groups)
    assert set(cp.group_quantiles_) == {"a", "b"}
    q = cp._row_thresholds(3, np.array(["c", "never-seen", "a"]))
    assert q.tolist() == [cp.quantile_, cp.quantile_, cp.group_quantiles_["a"]]
    # the default keeps a group's own threshold from ceil(0.9 / 0.1) = 9 rows on
    assert set(SplitConformalClassifier(alpha=0.1).fit(proba, y, groups=groups).group_quantiles_) == {
        "a",
        "b",
    }
    with pytest.raises(InvalidConfig, match="pass groups= to predict"):
        cp.predict_sets(proba)
    with pytest.raises(InvalidConfig, match="not to fit"):
        SplitConformalClassifier().fit(proba, y).predict_sets(proba, groups=groups)


def test_randomized_aps_is_reproducible_from_the_seed():
    rng = np.random.default_rng(4)
    proba, y, _ = _classification(rng, 600)
    a = SplitConformalClassifier(score="aps", randomized=True, seed=7).fit(proba[:300], y[:300])
    b = SplitConformalClassifier(score="aps", randomized=True, seed=7).fit(proba[:300], y[:300])
    c = SplitConformalClassifier(score="aps", randomized=True, seed=8).fit(proba[:300], y[:300])
    assert np.array_equal(a.predict_sets(proba[300:]), b.predict_sets(proba[300:]))
    assert not np.array_equal(a.predict_sets(proba[300:]), c.predict_sets(proba[300:]))
    assert np.array_equal(
        a.predict_sets(proba[300:]), pickle.loads(pickle.dumps(a)).predict_sets(proba[300:])
    )
    assert clone(a).get_params() == a.get_params() and not hasattr(clone(a), "quantile_")


def _regression(rng: np.random.Generator, n: int):
    """Heteroscedastic data: noise grows with x. Returns x, y, the true mean and true 30%/70% quantiles."""
    x = rng.uniform(0, 2 * np.pi, size=n)
    mean, sd = 2 * np.sin(x), 0.2 + 0.5 * x / (2 * np.pi)
    y = mean + sd * rng.normal(size=n)
    narrow = np.column_stack([mean - 0.5244 * sd, mean + 0.5244 * sd])  # true 30% and 70% quantiles
    return y, mean + 0.1, narrow  # a slightly biased point model; quantile model far too narrow


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_regression_absolute_and_cqr_intervals_cover_1_minus_alpha(alpha):
    n_cal = n_test = 500
    cover = {"absolute": [], "cqr": []}
    widths = {"absolute": [], "cqr": []}
    for seed in range(REPS):
        rng = np.random.default_rng(2000 + seed)
        y_cal, point_cal, q_cal = _regression(rng, n_cal)
        y_test, point_test, q_test = _regression(rng, n_test)
        for method, cal, test in (("absolute", point_cal, point_test), ("cqr", q_cal, q_test)):
            cr = SplitConformalRegressor(alpha, method=method).fit(cal, y_cal)
            intervals = cr.predict_intervals(test)
            report = coverage_report(intervals, y_test)
            cover[method].append(report["coverage"])
            widths[method].append(np.ptp(intervals[:, 1] - intervals[:, 0]))
    for method, values in cover.items():
        _assert_covers(float(np.mean(values)), alpha, n_cal, n_test, method)
    assert np.max(widths["absolute"]) < 1e-9  # constant width
    assert np.min(widths["cqr"]) > 0.3  # CQR keeps the model's varying width


def test_regressor_by_hand_and_infinite_threshold():
    cr = SplitConformalRegressor(alpha=0.25).fit(np.zeros(7), np.array([-3.0, -2, -1, 0, 1, 2, 3]))
    assert cr.quantile_ == 3.0  # |residuals| 0,1,1,2,2,3,3; ceil(8 * 0.75) = 6th smallest
    cqr = SplitConformalRegressor(alpha=0.25, method="cqr").fit(np.array([[0.0, 1.0]] * 7), np.arange(7.0))
    assert cqr.quantile_ == 4.0  # scores max(lo - y, y - hi) = -0, 0, 1, 2, 3, 4, 5
    assert cqr.predict_intervals(np.array([[10.0, 11.0]])).tolist() == [[6.0, 15.0]]
    wide = SplitConformalRegressor(alpha=0.1).fit(np.zeros(5), np.ones(5))
    assert wide.predict_intervals(np.array([1.0])).tolist() == [[-np.inf, np.inf]]


def test_coverage_report_overall_and_per_group_by_hand():
    sets = np.array([[True, False, False], [True, True, False], [False, False, True], [True, True, True]])
    report = coverage_report(sets, [0, 2, 2, 1], groups=["x", "x", "y", "y"])
    assert report == {
        "n": 4,
        "coverage": 0.75,
        "mean_set_size": 1.75,
        "by_group": {
            "x": {"n": 2, "coverage": 0.5, "mean_set_size": 1.5},
            "y": {"n": 2, "coverage": 1.0, "mean_set_size": 2.0},
        },
    }
    intervals = np.array([[0.0, 1.0], [0.0, 2.0], [5.0, 6.0]])
    assert coverage_report(intervals, [1.0, 3.0, 5.0]) == {"n": 3, "coverage": 2 / 3, "mean_width": 4 / 3}


def test_errors_name_the_field_and_show_the_value():
    proba = np.array([[0.6, 0.4], [0.3, 0.7]])
    with pytest.raises(InvalidConfig, match="alpha must lie strictly between 0 and 1.*got 1.5"):
        SplitConformalClassifier(alpha=1.5).fit(proba, [0, 1])
    with pytest.raises(InvalidConfig, match="Did you mean 'aps'"):
        SplitConformalClassifier(score="apss").fit(proba, [0, 1])
    with pytest.raises(SchemaError, match=r"class indices 0..1 \(columns of proba_cal\); got 2 at row 1"):
        SplitConformalClassifier().fit(proba, [0, 2])
    with pytest.raises(SchemaError, match=r"got 1.4 at row 0, class 0"):
        SplitConformalClassifier().fit(np.array([[1.4, -0.4]]), [0])
    with pytest.raises(NotReady):
        SplitConformalClassifier().predict_sets(proba)
    with pytest.raises(SchemaError, match=r"shape \(n, 2\) of \[lower, upper\] for method='cqr'"):
        SplitConformalRegressor(method="cqr").fit(np.zeros(3), np.zeros(3))
    with pytest.raises(SchemaError, match="proba has 3 classes"):
        SplitConformalClassifier().fit(proba, [0, 1]).predict_sets(np.full((1, 3), 1 / 3))
