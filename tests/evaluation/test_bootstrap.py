"""Bootstrap intervals: exact values against scikit-learn, and coverage of a known truth by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, roc_auc_score

from loopml.errors import InvalidConfig, SchemaError
from loopml.evaluation import (
    binary_metrics,
    expected_calibration_error,
    metric_with_ci,
    metrics_with_ci,
    scores_with_ci,
)
from loopml.evaluation.bootstrap import METRICS, _resample_counts, _statistic, score_values


def _population(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """p ~ Uniform(0, 1) and P(y = 1 | p) = p**2, a model that overstates its scores.

    Population values, by integration over p:
    Brier E[p^2 - 2p^3 + p^2] = 1/6; accuracy at 0.5 = int_.5^1 p^2 + int_0^.5 (1 - p^2) = 3/4;
    log loss = -int p^2 log p + (1 - p^2) log(1 - p) = 1/9 + 7/18 = 1/2;
    ROC AUC = int int_{a > b} 3a^2 * 1.5(1 - b^2) = 7/8.
    """
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    return (rng.uniform(size=n) < p**2).astype(int), p


TRUTH = {"brier": 1 / 6, "accuracy": 3 / 4, "log_loss": 1 / 2, "roc_auc": 7 / 8}


def _with_ties(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    y, p = _population(seed, n)
    p[: n // 2] = np.round(p[: n // 2], 2)  # tied scores exercise the rank and precision-recall code
    p[:5] = [0.0, 1.0, 0.5, 0.5, 0.5]
    return y, p


def test_value_equals_the_plain_metric_on_the_full_sample():
    y, p = _with_ties(0, 3000)
    result = metrics_with_ci(y, p, n_boot=50)
    plain = binary_metrics(y, p)
    assert list(result) == list(METRICS)
    assert result["log_loss"]["value"] == pytest.approx(plain["log_loss"], abs=1e-12)
    assert result["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert result["pr_auc"]["value"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert result["brier"]["value"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert result["accuracy"]["value"] == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-12)
    assert result["ece"]["value"] == pytest.approx(expected_calibration_error(y, p), abs=1e-12)
    quantile = metric_with_ci(y, p, "ece", n_boot=50, strategy="quantile", n_bins=7)
    assert quantile["value"] == pytest.approx(
        expected_calibration_error(y, p, strategy="quantile", n_bins=7), abs=1e-12
    )
    accuracy = metric_with_ci(y, p, "accuracy", n_boot=50, threshold=0.3)
    assert accuracy["value"] == pytest.approx(accuracy_score(y, p >= 0.3), abs=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_each_resampled_value_is_the_metric_of_that_explicit_resample(metric):
    y, p = _with_ties(1, 400)
    order = np.argsort(p, kind="stable")
    y, p = y[order], p[order]
    counts = _resample_counts(np.random.default_rng(5), 20, len(y))
    assert np.all(counts.sum(axis=1) == len(y))
    got = _statistic(metric, y, p, threshold=0.5, n_bins=10, strategy="uniform")(counts)
    reference = {
        "log_loss": lambda yy, pp: binary_metrics(yy, pp)["log_loss"],
        "roc_auc": roc_auc_score,
        "pr_auc": average_precision_score,
        "brier": brier_score_loss,
        "accuracy": lambda yy, pp: accuracy_score(yy, pp >= 0.5),
        "ece": expected_calibration_error,
    }[metric]
    for row, value in zip(counts.astype(int), got, strict=True):
        yy, pp = np.repeat(y, row), np.repeat(p, row)
        assert value == pytest.approx(reference(yy, pp), abs=1e-12)


def test_95_percent_intervals_cover_the_population_value_at_about_the_nominal_rate():
    reps, hits = 200, dict.fromkeys(TRUTH, 0)
    for seed in range(reps):
        y, p = _population(seed, 500)
        result = metrics_with_ci(y, p, metrics=tuple(TRUTH), n_boot=500, seed=seed)
        for name, truth in TRUTH.items():
            lo, hi = result[name]["ci"]
            hits[name] += lo <= truth <= hi
    # binomial(200, 0.95) has sd 0.015; the percentile bootstrap runs slightly under nominal
    for name, count in hits.items():
        assert 0.90 <= count / reps <= 0.99, (name, count / reps)


def test_same_seed_gives_the_same_interval_and_one_metric_matches_the_batch():
    y, p = _population(2, 1000)
    batch = metrics_with_ci(y, p, n_boot=300, seed=11)
    for name in METRICS:
        assert metric_with_ci(y, p, name, n_boot=300, seed=11) == batch[name]
    assert metric_with_ci(y, p, "brier", n_boot=300, seed=12) != batch["brier"]


def test_intervals_bracket_the_value_and_nest_by_level():
    y, p = _population(3, 2000)
    wide = metrics_with_ci(y, p, n_boot=400, level=0.95)
    narrow = metrics_with_ci(y, p, n_boot=400, level=0.5)
    for name in METRICS:
        lo, hi = wide[name]["ci"]
        assert lo < wide[name]["value"] < hi
        assert lo <= narrow[name]["ci"][0] <= narrow[name]["ci"][1] <= hi


def test_resamples_span_several_blocks_for_large_samples():
    y, p = _population(4, 30_000)  # 8 resamples per block of W, so 1000 resamples take 125 blocks
    result = metric_with_ci(y, p, "roc_auc")
    lo, hi = result["ci"]
    assert lo < 7 / 8 < hi and hi - lo < 0.02


def test_auc_is_nan_when_only_one_class_is_present():
    result = metric_with_ci(np.zeros(50), np.linspace(0, 1, 50), "roc_auc", n_boot=20)
    assert np.isnan(result["value"]) and all(np.isnan(result["ci"]))
    assert not np.isnan(metric_with_ci(np.zeros(50), np.linspace(0, 1, 50), "brier", n_boot=20)["value"])


def test_errors_name_the_field_and_show_the_value():
    y, p = _population(5, 10)
    with pytest.raises(InvalidConfig, match="metric must be one of .*got 'auc'"):
        metric_with_ci(y, p, "auc")
    with pytest.raises(InvalidConfig, match="level must lie strictly between 0 and 1.*got 95"):
        metric_with_ci(y, p, "brier", level=95)
    with pytest.raises(InvalidConfig, match="n_boot must be a positive integer; got 0"):
        metric_with_ci(y, p, "brier", n_boot=0)
    with pytest.raises(InvalidConfig, match="Use \\('brier',\\)"):
        metrics_with_ci(y, p, metrics="brier")
    with pytest.raises(SchemaError, match="y has 10 rows but p has 9"):
        metric_with_ci(y, p[:9], "brier")


def test_several_score_vectors_share_one_set_of_draws_and_each_equals_its_own_call():
    y, p = _with_ties(6, 5000)
    prior = np.full(len(y), y.mean())
    noisy = np.clip(p + np.random.default_rng(1).normal(0, 0.1, len(p)), 0, 1)
    wanted = {"model": METRICS, "prior": ("log_loss", "brier"), "noisy": ("roc_auc", "pr_auc", "ece")}
    together = scores_with_ci(y, {"model": p, "prior": prior, "noisy": noisy}, metrics=wanted, n_boot=120, seed=4)
    assert list(together) == ["model", "prior", "noisy"]
    for name, scores in (("model", p), ("prior", prior), ("noisy", noisy)):
        assert together[name] == metrics_with_ci(y, scores, metrics=wanted[name], n_boot=120, seed=4)
    same = scores_with_ci(y, {"a": p, "b": noisy}, metrics=("brier",), n_boot=50)
    assert same["a"] == metrics_with_ci(y, p, metrics=("brier",), n_boot=50)


def test_scores_with_ci_errors_name_the_vector_and_the_field():
    y, p = _population(7, 20)
    with pytest.raises(InvalidConfig, match=r"metrics must name the metrics of every score vector \['a', 'b'\]"):
        scores_with_ci(y, {"a": p, "b": p}, metrics={"a": ("brier",)})
    with pytest.raises(InvalidConfig, match="scores must map names to score vectors"):
        scores_with_ci(y, p)
    with pytest.raises(SchemaError, match=r"y has 20 rows but scores\['b'\] has 19"):
        scores_with_ci(y, {"a": p, "b": p[:19]}, metrics=("brier",))
    with pytest.raises(InvalidConfig, match="metric must be one of .*got 'auc'"):
        scores_with_ci(y, {"a": p}, metrics={"a": ("auc",)})


def test_score_values_are_the_values_scores_with_ci_reports():
    """The point values given before the intervals (a report's plots) are the very floats of the intervals' result."""
    y, p = _with_ties(3, 3000)
    scores = {"model": p, "flat": np.full(len(p), y.mean()), "coarse": np.round(p, 1)}
    metrics = {"model": METRICS, "flat": ("log_loss", "brier"), "coarse": ("roc_auc", "ece", "pr_auc")}
    values = score_values(y, scores, metrics=metrics)
    with_ci = scores_with_ci(y, scores, metrics=metrics, n_boot=20)
    assert values == {k: {m: r["value"] for m, r in v.items()} for k, v in with_ci.items()}
    assert list(values["model"]) == list(METRICS)
