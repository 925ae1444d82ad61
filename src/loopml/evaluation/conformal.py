"""Split conformal prediction: prediction sets and intervals with a finite-sample coverage guarantee.

A held-out calibration sample gives nonconformity scores ``s_1..s_n``; the threshold is the
``k = ceil((n + 1)(1 - alpha))``-th smallest score (:func:`conformal_quantile`), and a new point's set
(or interval) holds every answer whose score is at most that threshold. If calibration and test rows
are exchangeable, ``P(y in set) >= 1 - alpha``, averaged over calibration draws. When ``k > n`` the
threshold is infinite: the set is every class, the interval the whole line.

The Mondrian variant takes a ``groups`` argument and uses a separate threshold per group, so the
guarantee holds within each group (for example per carrier or per airport) instead of only on average.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from loopml.errors import InvalidConfig, NotReady, SchemaError
from loopml.evaluation.calibration import _check_choice, _class_indices

__all__ = ["SplitConformalClassifier", "SplitConformalRegressor", "conformal_quantile", "coverage_report"]


def _check_alpha(alpha: Any) -> Fraction:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise InvalidConfig(
            f"alpha must lie strictly between 0 and 1 (e.g. 0.1 for 90% coverage); got {alpha!r}."
        )
    return Fraction(repr(float(alpha)))  # the decimal as written, so (n + 1)(1 - alpha) is exact


def conformal_quantile(scores: Any, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest score, or ``inf`` when that rank exceeds ``n``.

    ``alpha`` is read as the decimal it prints as (0.1 is 1/10), so the rank has no rounding error.

    Examples
    --------
    >>> conformal_quantile([0.5, 0.1, 0.4, 0.2, 0.3], alpha=0.5)  # ceil(6 * 0.5) = 3rd smallest
    0.3
    >>> conformal_quantile([0.5, 0.1, 0.4, 0.2, 0.3], alpha=0.1)  # ceil(6 * 0.9) = 6 > 5
    inf
    """
    a = _check_alpha(alpha)
    s = np.sort(np.asarray(scores, dtype=float).ravel())
    k = math.ceil((len(s) + 1) * (1 - a))
    return float("inf") if k > len(s) else float(s[k - 1])


def _group_keys(groups: Any, n: int, name: str) -> np.ndarray:
    """Group keys as an object array of plain Python values (NumPy scalars unwrapped, so 1 and np.int64(1) agree)."""
    g = np.asarray(groups, dtype=object)
    if g.shape != (n,):
        raise SchemaError(f"{name} must have one entry per row, shape ({n},); got shape {g.shape}.")
    if not any(issubclass(t, np.generic) for t in set(map(type, g))):  # the usual case: strings
        return g.copy()
    return np.array([v.item() if isinstance(v, np.generic) else v for v in g], dtype=object)


class _SplitConformal(BaseEstimator):
    """Threshold fitting and lookup shared by the classifier and the regressor."""

    alpha: float
    min_group_size: int | None

    def _fit_thresholds(self, scores: np.ndarray, groups: Any) -> None:
        a = _check_alpha(self.alpha)
        if self.min_group_size is not None and (
            isinstance(self.min_group_size, bool)
            or not isinstance(self.min_group_size, (int, np.integer))
            or self.min_group_size < 1
        ):
            raise InvalidConfig(
                f"min_group_size must be a positive integer or None; got {self.min_group_size!r}."
            )
        self.n_calibration_ = len(scores)
        self.quantile_ = conformal_quantile(scores, self.alpha)
        self.group_quantiles_: dict[Any, float] | None = None
        if groups is None:
            return
        keys = _group_keys(groups, len(scores), "groups")
        # None: a group keeps its own threshold as soon as it has enough rows for a finite one
        smallest = self.min_group_size or math.ceil((1 - a) / a)
        self.group_quantiles_ = {}
        for key, idx in _group_indices(keys):
            if len(idx) >= smallest:
                self.group_quantiles_[key] = conformal_quantile(scores[idx], self.alpha)

    def _row_thresholds(self, n: int, groups: Any) -> np.ndarray:
        if not hasattr(self, "quantile_"):
            raise NotReady(f"{type(self).__name__} is not fitted yet; call fit() first.")
        if self.group_quantiles_ is None:
            if groups is not None:
                raise InvalidConfig(
                    f"groups were given to predict but not to fit; refit "
                    f"{type(self).__name__} with groups= for per-group thresholds."
                )
            return np.full(n, self.quantile_)
        if groups is None:
            raise InvalidConfig(
                f"{type(self).__name__} was fitted with groups; pass groups= to predict as well."
            )
        keys = _group_keys(groups, n, "groups")
        return pd.Series(keys, dtype=object).map(self.group_quantiles_).fillna(self.quantile_).to_numpy(float)


class SplitConformalClassifier(_SplitConformal):
    """Split conformal prediction sets for a classifier's predicted probabilities.

    Parameters
    ----------
    alpha
        Target miscoverage: sets contain the true class with probability at least ``1 - alpha``.
    score
        ``"lac"``: ``1 - p_true`` (smallest sets on average; Sadinle et al. 2019).
        ``"aps"``: the total probability of the classes ranked at or above the true one (Romano et al.
        2020); adapts the set size to how spread out the probabilities are.
    randomized
        For ``"aps"`` only: use the randomised score of Romano et al., ``mass ranked above + U * p_true``
        with ``U`` uniform on [0, 1]. The default is the deterministic score (mass ranked at or above),
        so a row's set never depends on a random draw. Both have the guarantee, since a set is exactly
        the classes whose score is at most the threshold; either may be empty for a very confident row.
    min_group_size
        With ``groups``: a group with fewer calibration rows uses the marginal threshold (as do groups
        not seen in fit), so for it only the marginal guarantee holds. ``None`` means the smallest size
        with a finite threshold, ``ceil((1 - alpha) / alpha)`` rows (9 at ``alpha=0.1``).
    seed
        Seed of ``U`` for the randomised score (separate streams for fit and for predict_sets).

    Attributes
    ----------
    quantile_ : float
        The marginal threshold on the scores (``inf`` means every set is all classes).
    group_quantiles_ : dict or None
        Per-group thresholds for the groups large enough to have their own.
    n_calibration_ : int
        Calibration rows.

    Examples
    --------
    >>> proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]] * 5)
    >>> cp = SplitConformalClassifier(alpha=0.2).fit(proba, np.array([0, 1, 1, 1] * 5))
    >>> cp.quantile_  # ceil(21 * 0.8) = 17th smallest of the 20 scores 1 - p_true
    0.7
    >>> cp.predict_sets(np.array([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1]]))
    array([[ True, False, False],
           [ True,  True, False]])
    """

    def __init__(
        self,
        alpha: float = 0.1,
        *,
        score: str = "lac",
        randomized: bool = False,
        min_group_size: int | None = None,
        seed: int | None = 0,
    ) -> None:
        self.alpha = alpha
        self.score = score
        self.randomized = randomized
        self.min_group_size = min_group_size
        self.seed = seed

    def fit(self, proba_cal: Any, y_cal: Any, groups: Any = None) -> SplitConformalClassifier:
        """Compute the threshold(s) from calibration probabilities (n, K) and class indices (n,)."""
        _check_choice("score", self.score, ("lac", "aps"))
        proba = _check_proba(proba_cal, "proba_cal")
        y_int = _class_indices(y_cal, proba.shape, name="y_cal", against="proba_cal")
        self.n_classes_ = proba.shape[1]
        scores = self._scores(proba, stream=0)[np.arange(len(proba)), y_int]
        self._fit_thresholds(scores, groups)
        return self

    def predict_sets(self, proba: Any, groups: Any = None) -> np.ndarray:
        """Boolean matrix (n, K): ``True`` where class k is in row i's prediction set."""
        p = _check_proba(proba, "proba")
        q = self._row_thresholds(len(p), groups)
        if p.shape[1] != self.n_classes_:
            raise SchemaError(
                f"proba has {p.shape[1]} classes but the calibration data had {self.n_classes_}."
            )
        return self._scores(p, stream=1) <= q[:, None]

    def _scores(self, proba: np.ndarray, *, stream: int) -> np.ndarray:
        """Nonconformity score of every (row, class) pair; a set is the classes scoring <= threshold."""
        if self.score == "lac":
            return 1.0 - proba
        order = np.argsort(-proba, axis=1, kind="stable")  # ties broken by class index, the same everywhere
        ranked = np.take_along_axis(proba, order, axis=1)
        mass = np.cumsum(ranked, axis=1)
        if self.randomized:
            rng = np.random.default_rng(None if self.seed is None else [self.seed, stream])
            mass = mass - ranked + rng.uniform(size=(len(proba), 1)) * ranked
        scores = np.empty_like(mass)
        np.put_along_axis(scores, order, mass, axis=1)
        return scores


def _check_proba(proba: Any, name: str) -> np.ndarray:
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape[1] < 2 or len(p) == 0:
        raise SchemaError(f"{name} must have shape (n >= 1, n_classes >= 2); got shape {p.shape}.")
    bad = np.argwhere(~((p >= 0) & (p <= 1)))
    if len(bad):
        i, k = bad[0]
        raise SchemaError(
            f"{name} must be probabilities in [0, 1]; got {p[i, k].item()!r} at row {i}, class {k}."
        )
    return p


class SplitConformalRegressor(_SplitConformal):
    """Split conformal prediction intervals around a regressor's predictions.

    Parameters
    ----------
    alpha
        Target miscoverage: intervals contain the truth with probability at least ``1 - alpha``.
    method
        ``"absolute"``: predictions are points ``yhat`` (n,); the score is ``|y - yhat|`` and the
        interval ``yhat -/+ q`` has the same width everywhere.
        ``"cqr"``: conformalised quantile regression (Romano, Patterson and Candes 2019); predictions
        are (n, 2) lower and upper quantile estimates, the score is ``max(lo - y, y - hi)`` and the
        interval ``[lo - q, hi + q]`` keeps the model's varying width, corrected to the target coverage.
    min_group_size
        As in :class:`SplitConformalClassifier`.

    Examples
    --------
    >>> cr = SplitConformalRegressor(alpha=0.25).fit(np.zeros(7), np.array([-3.0, -2, -1, 0, 1, 2, 3]))
    >>> cr.predict_intervals(np.array([10.0]))  # ceil(8 * 0.75) = 6th smallest |residual| is 3
    array([[ 7., 13.]])
    """

    def __init__(
        self, alpha: float = 0.1, *, method: str = "absolute", min_group_size: int | None = None
    ) -> None:
        self.alpha = alpha
        self.method = method
        self.min_group_size = min_group_size

    def fit(self, y_pred_cal: Any, y_cal: Any, groups: Any = None) -> SplitConformalRegressor:
        """Compute the threshold(s) from calibration predictions and targets."""
        _check_choice("method", self.method, ("absolute", "cqr"))
        pred = self._check_pred(y_pred_cal, "y_pred_cal")
        y = np.asarray(y_cal, dtype=float)
        if y.shape != (len(pred),):
            raise SchemaError(
                f"y_cal must have shape ({len(pred)},) to match y_pred_cal; got shape {y.shape}."
            )
        if not np.all(np.isfinite(y)):
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise SchemaError(f"y_cal must be finite; got {y[i].item()!r} at row {i}.")
        if self.method == "absolute":
            scores = np.abs(y - pred)
        else:
            scores = np.maximum(pred[:, 0] - y, y - pred[:, 1])
        self._fit_thresholds(scores, groups)
        return self

    def predict_intervals(self, y_pred: Any, groups: Any = None) -> np.ndarray:
        """Intervals as an (n, 2) array of ``[lower, upper]`` (infinite when the threshold is)."""
        if not hasattr(self, "quantile_"):
            raise NotReady("SplitConformalRegressor is not fitted yet; call fit() first.")
        pred = self._check_pred(y_pred, "y_pred")
        q = self._row_thresholds(len(pred), groups)
        if self.method == "absolute":
            return np.column_stack([pred - q, pred + q])
        return np.column_stack([pred[:, 0] - q, pred[:, 1] + q])

    def _check_pred(self, y_pred: Any, name: str) -> np.ndarray:
        pred = np.asarray(y_pred, dtype=float)
        want = "(n,)" if self.method == "absolute" else "(n, 2) of [lower, upper]"
        ok = pred.ndim == 1 if self.method == "absolute" else pred.ndim == 2 and pred.shape[1] == 2
        if not ok or len(pred) == 0:
            raise SchemaError(
                f"{name} must have shape {want} for method={self.method!r}; got shape {pred.shape}."
            )
        if not np.all(np.isfinite(pred)):
            raise SchemaError(f"{name} must be finite; got {pred[~np.isfinite(pred)][0].item()!r}.")
        return pred


def coverage_report(sets_or_intervals: Any, y: Any, groups: Any = None) -> dict[str, Any]:
    """Empirical coverage and mean set size (or interval width), overall and per group.

    Parameters
    ----------
    sets_or_intervals
        A boolean (n, K) matrix of prediction sets (``y`` holds class indices) or a float (n, 2) array
        of ``[lower, upper]`` intervals (``y`` holds numbers; the ends count as covered).
    y
        The true answers, shape (n,).
    groups
        Optional group of each row for a per-group breakdown.

    Returns
    -------
    dict
        ``{"n", "coverage", "mean_set_size"}`` for sets or ``{"n", "coverage", "mean_width"}`` for
        intervals, plus ``"by_group": {group: {same keys}}`` when ``groups`` is given.

    Examples
    --------
    >>> coverage_report(np.array([[True, False], [True, True]]), np.array([1, 0]))
    {'n': 2, 'coverage': 0.5, 'mean_set_size': 1.5}
    """
    a = np.asarray(sets_or_intervals)
    y = np.asarray(y)
    if a.ndim != 2 or y.shape != (len(a),):
        raise SchemaError(
            f"sets_or_intervals must be (n, K) or (n, 2) and y (n,); got shapes {a.shape} and {y.shape}."
        )
    if a.dtype == bool:
        y_int = _class_indices(y, a.shape, name="y", against="the prediction sets")
        covered = a[np.arange(len(a)), y_int]
        size, size_key = a.sum(axis=1).astype(float), "mean_set_size"
    elif a.shape[1] == 2 and np.issubdtype(a.dtype, np.number):
        y = y.astype(float)
        covered = (a[:, 0] <= y) & (y <= a[:, 1])
        size, size_key = (a[:, 1] - a[:, 0]).astype(float), "mean_width"
    else:
        raise SchemaError(
            f"sets_or_intervals must be a boolean (n, K) matrix or a numeric (n, 2) array; "
            f"got dtype {a.dtype} and shape {a.shape}."
        )

    def summary(rows: np.ndarray | slice) -> dict[str, Any]:
        return {
            "n": len(covered[rows]),
            "coverage": float(covered[rows].mean()),
            size_key: float(size[rows].mean()),
        }

    report = summary(slice(None))
    if groups is not None:
        keys = _group_keys(groups, len(a), "groups")
        report["by_group"] = {key: summary(idx) for key, idx in _group_indices(keys)}
    return report


def _group_indices(keys: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """Row indices of each distinct group, in order of first appearance (missing keys belong to none)."""
    codes, uniques = pd.factorize(pd.Series(keys, dtype=object), sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return [(key, order[bounds[i] : bounds[i + 1]]) for i, key in enumerate(uniques)]
