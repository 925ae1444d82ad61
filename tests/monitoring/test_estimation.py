"""Label-free performance estimation: exact values on tiny examples, agreement with realised metrics.

The simulation draws 200 seeded windows of 500 rows with calibrated scores (``p ~ Beta(2, 5)``,
``y ~ Bernoulli(p)``). Given the scores, each realised metric is a mean of independent bounded
terms, so ``z = (realised - estimated) / se`` is close to standard normal: ``|z| <= 3`` should hold in
about 99.7% of windows; the test asks for 97% (the normal approximation is rougher for log loss,
whose terms are skewed) and for the z-scores' standard deviation to be within 0.85-1.15 (the
standard error is neither too small nor too large).
"""

from __future__ import annotations

import itertools
import json
import math
import pickle

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.base import clone
from sklearn.metrics import accuracy_score

from loopml.errors import InvalidConfig, NotReady, SchemaError
from loopml.evaluation.calibration import expected_calibration_error
from loopml.evaluation.metrics import binary_metrics
from loopml.monitoring import PerformanceEstimator, calibration_check, estimate_performance

METRICS = ("log_loss", "brier", "accuracy", "positive_rate")


def _calibrated(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, n)
    return rng.binomial(1, p).astype(float), p


def _sharpened(p: np.ndarray) -> np.ndarray:
    """Overconfident scores: pushed toward 0 and 1, ranking unchanged."""
    return expit(3 * logit(p))


def _row_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    return {
        "log_loss": float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))),
        "brier": float(np.mean((y - p) ** 2)),
        "accuracy": float(np.mean((p >= threshold) == y)),
        "positive_rate": float(np.mean(y)),
    }


# ---------------------------------------------------------------- exact values


def test_expected_metrics_of_calibrated_scores_match_closed_forms() -> None:
    p = np.array([0.2, 0.5, 0.9])
    est = estimate_performance(p, threshold=0.5)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert est["n"] == 3 and est["threshold"] == 0.5
    assert est["log_loss"] == pytest.approx(entropy.mean(), abs=1e-12)
    assert est["brier"] == pytest.approx((0.16 + 0.25 + 0.09) / 3, abs=1e-12)
    # 0.2 is predicted negative (right w.p. 0.8); 0.5 and 0.9 positive
    assert est["accuracy"] == pytest.approx((0.8 + 0.5 + 0.9) / 3, abs=1e-12)
    assert est["positive_rate"] == pytest.approx(1.6 / 3, abs=1e-12)
    assert est["predicted_positive_rate"] == pytest.approx(2 / 3)
    var = p * (1 - p)
    assert est["brier_se"] == pytest.approx(math.sqrt(np.sum(var * (1 - 2 * p) ** 2)) / 3, abs=1e-12)
    assert est["accuracy_se"] == pytest.approx(math.sqrt(var.sum()) / 3, abs=1e-12)
    assert est["positive_rate_se"] == pytest.approx(math.sqrt(var.sum()) / 3, abs=1e-12)
    log_odds = np.log(p / (1 - p))
    assert est["log_loss_se"] == pytest.approx(math.sqrt(np.sum(var * log_odds**2)) / 3, abs=1e-12)


@pytest.mark.parametrize("use_q", [False, True])
def test_estimate_and_se_equal_mean_and_sd_over_all_label_vectors(use_q: bool) -> None:
    p = np.array([0.15, 0.45, 0.6, 0.95])
    q = np.array([0.3, 0.4, 0.7, 0.8]) if use_q else p
    est = estimate_performance(p, threshold=0.5, calibrated=q if use_q else None)
    outcomes = []
    for labels in itertools.product((0.0, 1.0), repeat=len(p)):
        y = np.array(labels)
        prob = float(np.prod(np.where(y == 1, q, 1 - q)))
        outcomes.append((prob, _row_metrics(y, p, 0.5)))
    for metric in METRICS:
        mean = sum(prob * m[metric] for prob, m in outcomes)
        var = sum(prob * (m[metric] - mean) ** 2 for prob, m in outcomes)
        assert est[metric] == pytest.approx(mean, abs=1e-12), metric
        assert est[f"{metric}_se"] == pytest.approx(math.sqrt(var), abs=1e-12), metric


def test_estimate_is_json_safe_and_scores_of_exactly_zero_or_one_are_clipped_for_log_loss() -> None:
    est = estimate_performance([0.0, 1.0, 0.3])
    assert json.loads(json.dumps(est, allow_nan=False)) == est
    assert all(math.isfinite(v) for v in est.values())
    assert est["accuracy_se"] > 0  # only the 0.3 row is uncertain


def test_realised_metrics_in_compare_equal_binary_metrics_and_accuracy_score() -> None:
    y, p = _calibrated(3, 400)
    estimator = PerformanceEstimator(threshold=0.4).fit(*_calibrated(4, 2000))
    cmp = estimator.compare(estimator.estimate(p), y, p)
    ref = binary_metrics(y, p)
    assert cmp["log_loss"]["realised"] == pytest.approx(ref["log_loss"], rel=1e-12)
    assert cmp["brier"]["realised"] == pytest.approx(ref["brier"], rel=1e-12)
    assert cmp["accuracy"]["realised"] == pytest.approx(accuracy_score(y, p >= 0.4), rel=1e-12)
    assert cmp["positive_rate"]["realised"] == pytest.approx(y.mean(), rel=1e-12)
    m = cmp["brier"]
    assert m["z"] == pytest.approx((m["realised"] - m["estimated"]) / m["se"])
    assert cmp["n"] == 400 and cmp["reliable"] is True


# ---------------------------------------------------------------- simulation


def test_estimated_metrics_agree_with_realised_within_three_standard_errors_over_200_seeds() -> None:
    estimator = PerformanceEstimator().fit(*_calibrated(10_000, 20_000))
    assert estimator.check_["reliable"]
    z = {metric: [] for metric in METRICS}
    for seed in range(200):
        y, p = _calibrated(seed, 500)
        cmp = estimator.compare(estimator.estimate(p), y, p)
        for metric in METRICS:
            z[metric].append(cmp[metric]["z"])
    for metric in METRICS:
        zs = np.array(z[metric])
        assert np.mean(np.abs(zs) <= 3) >= 0.97, metric
        assert 0.85 <= zs.std() <= 1.15, metric
        assert abs(zs.mean()) <= 3 / math.sqrt(200) * 1.15, metric  # no bias beyond noise


def test_recalibration_rescues_overconfident_scores() -> None:
    y_ref, p_ref = _calibrated(10_001, 5000)
    plain = PerformanceEstimator().fit(y_ref, _sharpened(p_ref))
    recal = PerformanceEstimator(recalibrate=True).fit(y_ref, _sharpened(p_ref))
    assert not plain.check_["reliable"] and recal.check_["reliable"]
    plain_ok = recal_ok = 0
    for seed in range(20):
        y, p = _calibrated(seed, 1000)
        s = _sharpened(p)
        plain_ok += abs(plain.compare(plain.estimate(s), y, s)["log_loss"]["z"]) <= 3
        recal_ok += abs(recal.compare(recal.estimate(s), y, s)["log_loss"]["z"]) <= 3
    assert recal_ok >= 18
    assert plain_ok <= 2  # trusting overconfident scores badly underestimates log loss


# ---------------------------------------------------------------- broken calibration


@pytest.mark.parametrize(
    "distort",
    [_sharpened, lambda p: np.clip(p + 0.15, 0, 1), lambda p: expit(0.4 * logit(p))],
    ids=["pushed-to-0-and-1", "shifted-up", "squashed-to-middle"],
)
def test_miscalibrated_scores_are_flagged_unreliable_and_the_estimate_says_so(distort) -> None:
    y, p = _calibrated(7, 5000)
    check = calibration_check(y, distort(p))
    assert not check["reliable"] and check["ece"] > 0.05
    assert "unreliable" in check["message"] and "0.05" in check["message"]
    est = PerformanceEstimator().fit(y, distort(p)).estimate(distort(p[:100]))
    assert est["reliable"] is False
    assert "UNRELIABLE" in est["message"] and f"{check['ece']:.4f}" in est["message"]


def test_calibrated_scores_pass_the_check_and_ece_is_the_evaluation_modules() -> None:
    y, p = _calibrated(8, 5000)
    check = calibration_check(y, p, n_bins=10)
    assert check["ece"] == expected_calibration_error(y, p, n_bins=10)
    assert check["reliable"] and check["n"] == 5000
    assert check["ece_noise"] < 0.025
    assert "calibrated" in check["message"] and "unreliable" not in check["message"]
    est = PerformanceEstimator().fit(y, p).estimate(p[:50])
    assert est["reliable"] is True and est["ece"] == check["ece"] and "UNRELIABLE" not in est["message"]


def test_a_small_reference_window_is_called_too_small_to_tell() -> None:
    y, p = _calibrated(9, 200)
    assert "larger reference window" in calibration_check(y, p)["message"]


# ---------------------------------------------------------------- component contract and errors


def test_estimator_clones_and_pickles() -> None:
    y, p = _calibrated(11, 3000)
    est = PerformanceEstimator(threshold=0.3, recalibrate=True)
    assert clone(est).get_params() == est.get_params()
    fitted = est.fit(y, p)
    restored = pickle.loads(pickle.dumps(fitted))
    assert restored.estimate(p[:10]) == fitted.estimate(p[:10])


def test_estimate_before_fit_raises_not_ready() -> None:
    with pytest.raises(NotReady, match="fit"):
        PerformanceEstimator().estimate([0.5])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: estimate_performance([0.2, 1.2]), SchemaError, r"1\.2 at row 1"),
        (lambda: estimate_performance([]), SchemaError, "empty"),
        (lambda: estimate_performance([0.2], threshold=1.5), InvalidConfig, "threshold.*1.5"),
        (lambda: estimate_performance([0.2], calibrated=[0.1, 0.2]), SchemaError, "2 rows"),
        (lambda: calibration_check([0, 2], [0.1, 0.2]), SchemaError, "2.0 at row 1"),
        (lambda: calibration_check([0, 1], [0.1, 0.2], max_ece=0), InvalidConfig, "max_ece.*0"),
        (lambda: PerformanceEstimator(threshold=-1).fit([0, 1], [0.1, 0.2]), InvalidConfig, "threshold"),
    ],
)
def test_bad_inputs_raise_errors_that_show_the_value(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_compare_rejects_an_estimate_of_a_different_window() -> None:
    y, p = _calibrated(12, 100)
    est = estimate_performance(p[:50])
    with pytest.raises(SchemaError, match="50 rows but p_current has 100"):
        PerformanceEstimator().fit(y, p).compare(est, y, p)
