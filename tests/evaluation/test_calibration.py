"""Calibration error, reliability curves and recalibrators, checked against scikit-learn."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from scipy.special import expit, logit, softmax
from sklearn.base import clone
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from loopml.errors import InvalidConfig, NotReady, SchemaError
from loopml.evaluation import (
    IdentityCalibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureScaling,
    calibrator_from_dict,
    choose_calibrator,
    expected_calibration_error,
    reliability_curve,
)


def _scores(seed: int, n: int, *, power: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores uniform on [0, 1] (some rounded to create ties and hits on bin edges); P(y=1 | p) = p**power."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    p[: n // 4] = np.round(p[: n // 4], 1)
    y = (rng.uniform(size=n) < p**power).astype(int)
    return y, p


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [3, 10, 17])
def test_reliability_curve_matches_sklearn_calibration_curve_on_the_same_bins(strategy, n_bins):
    y, p = _scores(0, 3000, power=1.7)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy)
    np.testing.assert_allclose(curve.mean_predicted, prob_pred, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.fraction_positive, prob_true, rtol=0, atol=1e-12)
    assert curve.count.sum() == len(y) and np.all(curve.count > 0)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_ece_is_the_count_weighted_gap_of_the_sklearn_curve(strategy):
    y, p = _scores(1, 2000, power=0.6)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy=strategy)
    counts = reliability_curve(y, p, n_bins=10, strategy=strategy).count
    expected = np.sum(counts / len(y) * np.abs(prob_true - prob_pred))
    assert expected_calibration_error(y, p, n_bins=10, strategy=strategy) == pytest.approx(
        expected, abs=1e-12
    )


def test_ece_by_hand_puts_a_score_on_an_edge_in_the_lower_bin():
    # bins [0, 0.5] and (0.5, 1]: 0.5 belongs to the first, as in calibration_curve
    y = [0, 1, 1, 1]
    p = [0.5, 0.5, 0.75, 0.75]
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0 + 0.5 * 0.25)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_ece_is_small_when_calibrated_and_large_when_not(strategy):
    y, p = _scores(2, 20_000)
    assert expected_calibration_error(y, p, strategy=strategy) < 0.02
    y_bad, p_bad = _scores(2, 20_000, power=2.0)  # true rate p**2: the scores overstate it by up to 0.25
    assert expected_calibration_error(y_bad, p_bad, strategy=strategy) > 0.12


def test_platt_without_smoothing_is_unpenalised_logistic_regression_on_the_logit():
    y, p = _scores(3, 5000, power=2.0)
    cal = PlattCalibrator(smooth_targets=False).fit(p, y)
    z = logit(np.clip(p, 1e-7, 1 - 1e-7)).reshape(-1, 1)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(z, y)
    assert cal.coef_ == pytest.approx(ref.coef_[0, 0], abs=1e-5)
    assert cal.intercept_ == pytest.approx(ref.intercept_[0], abs=1e-5)
    np.testing.assert_allclose(cal.predict(p), ref.predict_proba(z)[:, 1], atol=1e-6)


def test_platt_recovers_the_slope_of_overconfident_scores():
    rng = np.random.default_rng(4)
    q = expit(rng.normal(0, 1.5, size=50_000))
    y = (rng.uniform(size=q.size) < q).astype(int)
    p = expit(2.0 * logit(q))  # twice as confident as it should be
    cal = PlattCalibrator().fit(p, y)
    assert cal.coef_ == pytest.approx(0.5, abs=0.02)
    assert cal.intercept_ == pytest.approx(0.0, abs=0.03)


def test_isotonic_matches_sklearn_and_clips_outside_the_fitted_range():
    y, p = _scores(5, 3000, power=1.5)
    inside = (p > 0.05) & (p < 0.95)
    cal = IsotonicCalibrator().fit(p[inside], y[inside])
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p[inside], y[inside])
    grid = np.r_[0.0, 0.01, np.linspace(0, 1, 1001), 0.99, 1.0]
    np.testing.assert_allclose(cal.predict(grid), ref.predict(grid), rtol=0, atol=1e-12)
    assert cal.predict([0.0])[0] == cal.y_thresholds_[0] and cal.predict([1.0])[0] == cal.y_thresholds_[-1]


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(6)
    true_logits = rng.normal(0, 2.0, size=(40_000, 4))
    cum = np.cumsum(softmax(true_logits, axis=1), axis=1)
    y = (rng.uniform(size=(len(cum), 1)) > cum).sum(axis=1)
    ts = TemperatureScaling().fit(2.5 * true_logits, y)
    assert ts.temperature_ == pytest.approx(2.5, abs=0.08)
    proba = ts.predict(2.5 * true_logits)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(proba.argmax(axis=1), true_logits.argmax(axis=1))


def test_choose_calibrator_improves_validation_log_loss_on_miscalibrated_scores():
    rng = np.random.default_rng(7)
    q = expit(rng.normal(-1.0, 1.2, size=20_000))
    y = (rng.uniform(size=q.size) < q).astype(int)
    p = expit(2.5 * logit(q) + 1.0)  # overconfident and biased upwards
    name, cal, losses = choose_calibrator(y[:10_000], p[:10_000], y[10_000:], p[10_000:])
    assert set(losses) == {"identity", "platt", "isotonic"}
    assert name != "identity" and losses[name] == min(losses.values())
    assert losses[name] < losses["identity"] - 0.05
    val_loss = -np.mean(
        np.where(y[10_000:] == 1, np.log(cal.predict(p[10_000:])), np.log1p(-cal.predict(p[10_000:])))
    )
    assert val_loss == pytest.approx(losses[name], rel=1e-9)


def test_choose_calibrator_prefers_the_earlier_candidate_on_a_tie():
    y, p = _scores(8, 1000)
    name, cal, losses = choose_calibrator(y, p, y, p, candidates=("identity",))
    assert name == "identity" and isinstance(cal, IdentityCalibrator) and list(losses) == ["identity"]


def _fitted_calibrators() -> list:
    y, p = _scores(9, 2000, power=1.3)
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(500, 3))
    labels = rng.integers(0, 3, size=500)
    return [
        (IdentityCalibrator().fit(p, y), p),
        (PlattCalibrator().fit(p, y), p),
        (PlattCalibrator(smooth_targets=False).fit(p, y), p),
        (IsotonicCalibrator().fit(p, y), np.r_[p, 0.0, 1.0]),
        (TemperatureScaling().fit(logits, labels), logits),
    ]


@pytest.mark.parametrize("index", range(5))
def test_to_dict_from_dict_round_trips_predictions_exactly_through_json(index):
    cal, x = _fitted_calibrators()[index]
    text = json.dumps(cal.to_dict(), allow_nan=False)
    restored = calibrator_from_dict(json.loads(text))
    assert type(restored) is type(cal) and restored.get_params() == cal.get_params()
    assert np.array_equal(restored.predict(x), cal.predict(x))
    assert np.array_equal(type(cal).from_dict(json.loads(text)).predict(x), cal.predict(x))


@pytest.mark.parametrize("index", range(5))
def test_calibrators_clone_unfitted_and_pickle_fitted(index):
    cal, x = _fitted_calibrators()[index]
    fresh = clone(cal)
    assert fresh.get_params() == cal.get_params() and not hasattr(fresh, "coef_")
    assert np.array_equal(pickle.loads(pickle.dumps(cal)).predict(x), cal.predict(x))


@pytest.mark.parametrize("cls", [PlattCalibrator, IsotonicCalibrator, TemperatureScaling])
def test_predict_before_fit_raises_not_ready(cls):
    with pytest.raises(NotReady, match="fit"):
        cls().predict(np.array([[0.5, 0.5]]) if cls is TemperatureScaling else np.array([0.5]))
    with pytest.raises(NotReady):
        cls().to_dict()


def test_bad_inputs_name_the_field_and_show_the_value():
    with pytest.raises(SchemaError, match=r"p must be probabilities in \[0, 1\]; got 1.2 at row 1"):
        expected_calibration_error([0, 1], [0.5, 1.2])
    with pytest.raises(SchemaError, match="got 2.0 at row 0"):
        reliability_curve([2, 1], [0.5, 0.5])
    with pytest.raises(SchemaError, match="y has 3 rows but p has 2"):
        PlattCalibrator().fit([0.5, 0.5], [0, 1, 1])
    with pytest.raises(InvalidConfig, match="Did you mean 'quantile'"):
        reliability_curve([0, 1], [0.2, 0.8], strategy="quantiles")
    with pytest.raises(InvalidConfig, match="n_bins must be a positive integer; got 0"):
        expected_calibration_error([0, 1], [0.2, 0.8], n_bins=0)
    with pytest.raises(InvalidConfig, match="kind must be one of"):
        calibrator_from_dict({"kind": "beta"})
    with pytest.raises(SchemaError, match=r"class indices 0..2 \(columns of logits\); got 3 at row 1"):
        TemperatureScaling().fit(np.zeros((2, 3)), [0, 3])
