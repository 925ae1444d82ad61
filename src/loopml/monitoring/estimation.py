"""Performance estimation before labels arrive: confidence-based, as NannyML's CBPE does.

Labels for a prediction often arrive hours or weeks after it is served. If the scores are
calibrated, each score already says how likely its label is to be 1, so the expected value of any
per-row loss can be computed from the scores alone. For row *i* with served score ``p_i`` and
probability ``q_i`` that its label is 1, a per-row loss that is ``v1`` when the label is 1 and
``v0`` when it is 0 has mean ``q v1 + (1 - q) v0`` and variance ``q (1 - q) (v1 - v0)^2``. Summing over
rows gives the expected metric and the standard error of the *realised* metric around it
(labels drawn independently given the scores):

- log loss: ``v1 = -log p``, ``v0 = -log(1 - p)``; with ``q = p`` its mean is the binary entropy;
- Brier score: ``v1 = (1 - p)^2``, ``v0 = p^2``; with ``q = p`` its mean is ``p (1 - p)``;
- accuracy at ``threshold``: the prediction is positive when ``p >= threshold``, and is right
  with probability ``q`` if so and ``1 - q`` otherwise;
- positive rate (prevalence of label 1): mean ``q``.

:func:`estimate_performance` takes ``q = p`` by default, i.e. trusts the scores.
:class:`PerformanceEstimator` first checks that trust on a labelled reference window
(:func:`calibration_check`) and can replace ``q`` by an isotonic recalibration of ``p`` fitted there;
losses are still those of the served scores ``p``, so the estimate is of the served model.

The estimate assumes that what a score means has not changed since the reference window (no
concept shift: ``P(label | score)`` stays put). Covariate shift, which moves the scores, is handled;
a change in the score-label relation is not, and only arriving labels can reveal it
(:meth:`PerformanceEstimator.compare`). The standard errors cover the randomness of the labels,
not the error of the recalibration map.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from loopml.errors import InvalidConfig, NotReady, SchemaError
from loopml.evaluation.calibration import IsotonicCalibrator, expected_calibration_error

__all__ = ["PerformanceEstimator", "calibration_check", "estimate_performance"]

_EPS = 1e-7  # the clipping loopml.evaluation.metrics.binary_metrics applies before log loss
_METRICS = ("log_loss", "brier", "accuracy", "positive_rate")
_N_FOLDS = 5  # folds for the out-of-fold calibration check of an isotonic map


def _scores(p: Any, *, name: str) -> np.ndarray:
    """Scores as a 1-D float array in [0, 1] with at least one row."""
    a = np.asarray(p, dtype=float)
    if a.ndim != 1:
        raise SchemaError(f"{name} must be one-dimensional; got shape {a.shape}.")
    if len(a) == 0:
        raise SchemaError(f"{name} is empty; at least one score is needed.")
    bad = np.flatnonzero(~((a >= 0) & (a <= 1)))  # also catches NaN
    if len(bad):
        raise SchemaError(
            f"{name} must be probabilities in [0, 1]; got {a[bad[0]].item()!r} at row {bad[0]}."
        )
    return a


def _labels(y: Any, *, name: str, n: int, against: str) -> np.ndarray:
    a = np.asarray(y, dtype=float)
    if a.ndim != 1:
        raise SchemaError(f"{name} must be one-dimensional; got shape {a.shape}.")
    if len(a) != n:
        raise SchemaError(f"{name} has {len(a)} rows but {against} has {n}; they must be aligned.")
    bad = np.flatnonzero((a != 0) & (a != 1))
    if len(bad):
        raise SchemaError(f"{name} must hold binary labels 0/1; got {a[bad[0]].item()!r} at row {bad[0]}.")
    return a


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not (
        0 <= threshold <= 1
    ):
        raise InvalidConfig(f"threshold must be a number in [0, 1], e.g. 0.5; got {threshold!r}.")
    return float(threshold)


def _check_max_ece(max_ece: Any) -> float:
    if isinstance(max_ece, bool) or not isinstance(max_ece, numbers.Real) or not (
        0 < max_ece <= 1
    ):
        raise InvalidConfig(f"max_ece must be a number in (0, 1], e.g. 0.05; got {max_ece!r}.")
    return float(max_ece)


def _row_values(p: np.ndarray, threshold: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per metric, each row's loss when the label is 1 and when it is 0."""
    pc = np.clip(p, _EPS, 1 - _EPS)
    predicted = (p >= threshold).astype(float)
    return {
        "log_loss": (-np.log(pc), -np.log1p(-pc)),
        "brier": ((1 - p) ** 2, p**2),
        "accuracy": (predicted, 1 - predicted),
        "positive_rate": (np.ones_like(p), np.zeros_like(p)),
    }


def estimate_performance(scores: Any, *, threshold: float = 0.5, calibrated: Any = None) -> dict[str, Any]:
    """Expected log loss, Brier score, accuracy and positive rate of scores whose labels are unknown.

    Parameters
    ----------
    scores
        Served scores ``p`` (probability of the positive class), one per row.
    threshold
        A row is predicted positive when its score is ``>= threshold`` (for accuracy).
    calibrated
        Probability ``q`` that each row's label is 1. ``None`` (default) takes the scores
        themselves, i.e. assumes they are calibrated; :class:`PerformanceEstimator` passes
        recalibrated scores here.

    Returns
    -------
    dict
        ``log_loss``, ``brier``, ``accuracy``, ``positive_rate`` (expected values) with a standard
        error each (``log_loss_se`` ...: ``sqrt(sum of per-row variances) / n``, the spread of the
        realised metric once labels arrive), ``predicted_positive_rate`` (share of scores
        ``>= threshold``, known exactly), ``threshold`` and ``n``. All values are plain floats/ints.

    Examples
    --------
    >>> est = estimate_performance([0.1, 0.5, 0.9])
    >>> round(est["brier"], 4), round(est["accuracy"], 4)
    (0.1433, 0.7667)
    """
    threshold = _check_threshold(threshold)
    p = _scores(scores, name="scores")
    if calibrated is None:
        q = p
    else:
        q = _scores(calibrated, name="calibrated")
        if len(q) != len(p):
            raise SchemaError(f"calibrated has {len(q)} rows but scores has {len(p)}; they must be aligned.")
    n = len(p)
    out: dict[str, Any] = {"n": n, "threshold": threshold}
    for metric, (v1, v0) in _row_values(p, threshold).items():
        mean = q * v1 + (1 - q) * v0
        var = q * (1 - q) * (v1 - v0) ** 2
        out[metric] = float(mean.mean())
        out[f"{metric}_se"] = float(math.sqrt(var.sum()) / n)
    out["predicted_positive_rate"] = float(np.mean(p >= threshold))
    return out


def _ece_noise(p: np.ndarray, n_bins: int) -> float:
    """Approximate ECE that perfectly calibrated scores would show on this sample, from noise alone.

    Per bin, the fraction of positives differs from the mean score by a normal error with variance
    ``sum p(1 - p) / count^2``, whose expected absolute value is ``sqrt(2 / pi)`` standard deviations.
    Bins are cut as in :func:`loopml.evaluation.calibration.reliability_curve` (equal width).
    """
    ids = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p)
    count = np.bincount(ids, minlength=n_bins)
    var_sum = np.bincount(ids, weights=p * (1 - p), minlength=n_bins)
    keep = count > 0
    sd = np.sqrt(var_sum[keep]) / count[keep]
    return float(np.sum(count[keep] / len(p) * math.sqrt(2 / math.pi) * sd))


def calibration_check(y_ref: Any, p_ref: Any, *, n_bins: int = 10, max_ece: float = 0.05) -> dict[str, Any]:
    """Are these scores calibrated well enough on a labelled window for estimates to be trusted?

    Parameters
    ----------
    y_ref
        Labels (0/1) of the reference window.
    p_ref
        Scores of the same rows.
    n_bins
        Equal-width bins for the expected calibration error
        (:func:`~loopml.evaluation.calibration.expected_calibration_error`).
    max_ece
        Largest ECE at which the scores count as calibrated.

    Returns
    -------
    dict
        ``ece``; ``ece_noise``, the ECE perfectly calibrated scores would show on a sample like this
        one (when it is near ``max_ece`` the window is too small to tell); ``max_ece``; ``n``;
        ``reliable`` (``ece <= max_ece``) and a ``message`` saying so in words.

    Examples
    --------
    >>> calibration_check([0, 0, 1, 1], [0.0, 0.0, 1.0, 1.0])["reliable"]
    True
    """
    max_ece = _check_max_ece(max_ece)
    p = _scores(p_ref, name="p_ref")
    y = _labels(y_ref, name="y_ref", n=len(p), against="p_ref")
    ece = expected_calibration_error(y, p, n_bins=n_bins)
    return _check_result(ece, _ece_noise(p, n_bins), max_ece=max_ece, n=len(p), what="the scores")


def _check_result(ece: float, noise: float, *, max_ece: float, n: int, what: str) -> dict[str, Any]:
    reliable = ece <= max_ece
    where = f"On the reference window ({n} rows) {what}"
    if reliable:
        message = f"{where} are calibrated: ECE {ece:.4f} <= max_ece {max_ece}."
    else:
        message = (
            f"{where} are miscalibrated: ECE {ece:.4f} > max_ece {max_ece}, "
            "so label-free performance estimates are unreliable. Recalibrate the model "
            "(or use PerformanceEstimator(recalibrate=True))."
        )
    if noise > 0.5 * max_ece:
        message += (
            f" With {n} rows even perfectly calibrated scores would show an ECE near {noise:.4f}; "
            "a larger reference window would make this check sharper."
        )
    return {
        "ece": float(ece),
        "ece_noise": float(noise),
        "max_ece": max_ece,
        "n": n,
        "reliable": bool(reliable),
        "message": message,
    }


class PerformanceEstimator(BaseEstimator):
    """Estimate a binary classifier's performance on unlabelled windows, after checking calibration.

    ``fit`` runs :func:`calibration_check` on a labelled reference window; ``estimate`` applies
    :func:`estimate_performance` to a current window and says whether the result can be trusted;
    ``compare`` sets the estimate against the realised metrics once labels arrive.

    Parameters
    ----------
    threshold
        A row is predicted positive when its score is ``>= threshold``.
    max_ece
        Largest reference ECE at which the estimate counts as reliable.
    recalibrate
        ``False`` (default): trust the scores as probabilities; the reference check is of the scores
        themselves. ``True``: fit an isotonic map from score to label frequency on the reference
        (:class:`~loopml.evaluation.calibration.IsotonicCalibrator`) and use its output as the label
        probability; losses are still those of the served scores. The check is then of the map,
        measured out of fold (5 interleaved folds) since isotonic regression is calibrated in sample
        by construction. Off by default because the map is a step function that needs a large
        reference window, and its own error is not in the standard errors.
    n_bins
        Equal-width bins for the ECE.

    Attributes
    ----------
    check_ : dict
        The :func:`calibration_check` result on the reference window.
    calibrator_ : IsotonicCalibrator or None
        The recalibration map (``None`` unless ``recalibrate``).

    Examples
    --------
    >>> est = PerformanceEstimator().fit([0, 0, 1, 1], [0.0, 0.0, 1.0, 1.0]).estimate([0.1, 0.9])
    >>> est["reliable"], round(est["accuracy"], 2)
    (True, 0.9)
    """

    def __init__(
        self, *, threshold: float = 0.5, max_ece: float = 0.05, recalibrate: bool = False, n_bins: int = 10
    ) -> None:
        self.threshold = threshold
        self.max_ece = max_ece
        self.recalibrate = recalibrate
        self.n_bins = n_bins

    def fit(self, y_ref: Any, p_ref: Any) -> PerformanceEstimator:
        """Check calibration on a labelled reference window (and fit the recalibration map)."""
        _check_threshold(self.threshold)
        max_ece = _check_max_ece(self.max_ece)
        if not isinstance(self.recalibrate, bool):
            raise InvalidConfig(f"recalibrate must be True or False; got {self.recalibrate!r}.")
        p = _scores(p_ref, name="p_ref")
        y = _labels(y_ref, name="y_ref", n=len(p), against="p_ref")
        if not self.recalibrate:
            self.calibrator_ = None
            self.check_ = calibration_check(y, p, n_bins=self.n_bins, max_ece=max_ece)
            return self
        if len(p) < 2 * _N_FOLDS:
            raise SchemaError(f"recalibrate=True needs at least {2 * _N_FOLDS} reference rows; got {len(p)}.")
        self.calibrator_ = IsotonicCalibrator().fit(p, y)
        fold = np.arange(len(p)) % _N_FOLDS
        out_of_fold = np.empty_like(p)
        for k in range(_N_FOLDS):
            inside = fold == k
            out_of_fold[inside] = IsotonicCalibrator().fit(p[~inside], y[~inside]).predict(p[inside])
        ece = expected_calibration_error(y, out_of_fold, n_bins=self.n_bins)
        noise = _ece_noise(out_of_fold, self.n_bins)
        self.check_ = _check_result(ece, noise, max_ece=max_ece, n=len(p), what="the recalibrated scores")
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "check_"):
            raise NotReady("This PerformanceEstimator has no reference yet; call fit(y_ref, p_ref) first.")

    def estimate(self, p_current: Any) -> dict[str, Any]:
        """Expected metrics of a current window, with ``reliable``, ``ece`` and a ``message``.

        The keys of :func:`estimate_performance`, plus ``reliable`` (the reference check passed),
        ``ece`` (the reference ECE), ``recalibrated`` and ``message``, which states plainly when the
        estimate is unreliable because calibration is broken.
        """
        self._check_fitted()
        p = _scores(p_current, name="p_current")
        q = None if self.calibrator_ is None else np.clip(self.calibrator_.predict(p), 0.0, 1.0)
        out = estimate_performance(p, threshold=self.threshold, calibrated=q)
        reliable = self.check_["reliable"]
        if reliable:
            message = f"Estimate from {len(p)} unlabelled rows. {self.check_['message']}"
        else:
            message = f"Estimate is UNRELIABLE: {self.check_['message']}"
        out.update(
            reliable=reliable,
            ece=self.check_["ece"],
            recalibrated=self.calibrator_ is not None,
            message=message,
        )
        return out

    def compare(self, estimate: Mapping[str, Any], y_current: Any, p_current: Any) -> dict[str, Any]:
        """Realised against estimated metrics once the window's labels have arrived.

        Parameters
        ----------
        estimate
            The output of :meth:`estimate` (or :func:`estimate_performance`) for ``p_current``.
        y_current, p_current
            The labels and the same served scores the estimate was made from.

        Returns
        -------
        dict
            For each of ``log_loss``, ``brier``, ``accuracy``, ``positive_rate`` a dict with
            ``estimated``, ``realised``, ``se`` and ``z = (realised - estimated) / se``
            (``None`` when ``se`` is 0, which happens only with scores of exactly 0 or 1); plus ``n``
            and ``reliable``. Under the estimator's assumptions each ``z`` is roughly standard
            normal, so ``|z| > 3`` says the estimate has broken down (often: concept shift).
        """
        p = _scores(p_current, name="p_current")
        y = _labels(y_current, name="y_current", n=len(p), against="p_current")
        needed = ("n", "threshold", *_METRICS, *(f"{m}_se" for m in _METRICS))
        missing = [k for k in needed if k not in estimate]
        if missing:
            raise SchemaError(f"estimate lacks {missing}; pass the dict returned by estimate().")
        if estimate["n"] != len(p):
            raise SchemaError(
                f"estimate was made from {estimate['n']} rows but p_current has {len(p)}; "
                "compare the estimate with the window it was made from."
            )
        out: dict[str, Any] = {"n": len(p), "reliable": estimate.get("reliable")}
        for metric, (v1, v0) in _row_values(p, float(estimate["threshold"])).items():
            realised = float(np.mean(np.where(y == 1, v1, v0)))
            estimated, se = float(estimate[metric]), float(estimate[f"{metric}_se"])
            z = (realised - estimated) / se if se > 0 else None
            out[metric] = {"estimated": estimated, "realised": realised, "se": se, "z": z}
        return out
