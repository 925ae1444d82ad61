"""Percentile-bootstrap confidence intervals for binary classification metrics.

Every metric here is a function of the multiset of rows, so a resample is just a vector of counts
(how often each row was drawn). The rows are sorted by score once; then for a block of resamples the
counts form a matrix ``W`` of shape (resamples, rows) and each metric is a few vectorised operations on
it: a matrix-vector product for the per-row means (log loss, Brier, accuracy), cumulative sums over
tied-score groups for ROC AUC (the rank formula) and average precision, and sums over the score bins
for ECE. A thousand resamples of 30,000 rows take under a second per metric.

All metrics asked for in one call share the same resamples, so their intervals are paired.
:func:`scores_with_ci` evaluates several score vectors for the same labels (a model and its
baselines) in one pass: the count matrices are drawn once and applied to each vector, so each
result is exactly what :func:`metrics_with_ci` returns for that vector alone with the same seed, at
the cost of one set of draws.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from loopml.errors import InvalidConfig
from loopml.evaluation._inputs import _bin_ids, _binary_inputs, _check_choice, _row_log_loss

__all__ = ["METRICS", "metric_with_ci", "metrics_with_ci", "score_values", "scores_with_ci"]

METRICS: tuple[str, ...] = ("log_loss", "roc_auc", "pr_auc", "brier", "accuracy", "ece")
"""Metric names :func:`metric_with_ci` understands."""

_BLOCK_CELLS = 2**18  # entries of W per block: 2 MB of float64, so the temporaries stay in cache

# count matrix (b, n), optional per-block cache shared by the metrics of one score vector
# -> metric per resample (b,)
_Stat = Callable[..., np.ndarray]


def metric_with_ci(
    y: Any,
    p: Any,
    metric: str,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    threshold: float = 0.5,
    n_bins: int = 10,
    strategy: str = "uniform",
) -> dict[str, Any]:
    """One metric on the full sample with a percentile-bootstrap confidence interval.

    Parameters
    ----------
    y
        Binary labels (0/1).
    p
        Predicted probabilities of the positive class.
    metric
        One of :data:`METRICS`: ``"log_loss"`` (scores clipped to [1e-7, 1 - 1e-7], as
        ``binary_metrics`` does), ``"roc_auc"``, ``"pr_auc"`` (average precision, scikit-learn's
        definition), ``"brier"``, ``"accuracy"`` (a row is called positive when ``p >= threshold``) or
        ``"ece"`` (see ``expected_calibration_error``).
    n_boot
        Number of resamples of the rows (with replacement, same size as the sample).
    level
        Coverage of the interval: the bounds are the ``(1 - level) / 2`` and ``(1 + level) / 2``
        quantiles of the resampled values (linear interpolation).
    seed
        Seed of the resampling; the same seed, data and metric give the same interval.
    threshold
        Decision threshold for ``"accuracy"``.
    n_bins, strategy
        Binning for ``"ece"``. With ``strategy="quantile"`` the bin edges are those of the full sample and
        stay fixed across resamples.

    Returns
    -------
    dict
        ``{"value": float, "ci": [lo, hi]}``. ``value`` is the metric on the full sample. Resamples on
        which the metric is undefined (ROC AUC with one class) are left out of the quantiles; if the
        metric is undefined on the full sample the value and bounds are NaN.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=2000)
    >>> y = rng.uniform(size=2000) < p
    >>> r = metric_with_ci(y, p, "brier", n_boot=200)
    >>> r["ci"][0] < r["value"] < r["ci"][1]
    True
    """
    return metrics_with_ci(
        y,
        p,
        metrics=(metric,),
        n_boot=n_boot,
        level=level,
        seed=seed,
        threshold=threshold,
        n_bins=n_bins,
        strategy=strategy,
    )[metric]


def metrics_with_ci(
    y: Any,
    p: Any,
    *,
    metrics: Sequence[str] = METRICS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    threshold: float = 0.5,
    n_bins: int = 10,
    strategy: str = "uniform",
) -> dict[str, dict[str, Any]]:
    """Several metrics with percentile-bootstrap intervals from the same resamples.

    Parameters are those of :func:`metric_with_ci`; ``metrics`` lists the names wanted.

    Returns
    -------
    dict
        ``{name: {"value": float, "ci": [lo, hi]}}`` in the order of ``metrics``. Each entry equals what
        ``metric_with_ci`` returns for that name with the same seed.
    """
    return scores_with_ci(y, {"": p}, metrics=metrics, n_boot=n_boot, level=level, seed=seed,
                          threshold=threshold, n_bins=n_bins, strategy=strategy)[""]


def scores_with_ci(
    y: Any,
    scores: Mapping[str, Any],
    *,
    metrics: Sequence[str] | Mapping[str, Sequence[str]] = METRICS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
    threshold: float = 0.5,
    n_bins: int = 10,
    strategy: str = "uniform",
) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`metrics_with_ci` for several score vectors of the same labels, drawing the resamples once.

    Parameters
    ----------
    y
        Binary labels (0/1).
    scores
        ``{name: probabilities}``, each aligned with ``y`` (a model, its baselines, the champion).
    metrics
        The metric names for every vector, or ``{name: metric names}`` per vector.
    n_boot, level, seed, threshold, n_bins, strategy
        As for :func:`metric_with_ci`.

    Returns
    -------
    dict
        ``{name: {metric: {"value": float, "ci": [lo, hi]}}}``; each ``result[name]`` equals
        ``metrics_with_ci(y, scores[name], metrics=..., seed=seed, ...)``. A resample is a count per
        row of the vector's rows sorted by its own score, as in :func:`metrics_with_ci`, so the intervals
        of two vectors are not paired row by row.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=2000)
    >>> y = rng.uniform(size=2000) < p
    >>> both = scores_with_ci(y, {"model": p, "prior": np.full(2000, y.mean())},
    ...                       metrics={"model": ("brier", "roc_auc"), "prior": ("brier",)}, n_boot=200)
    >>> both["model"]["brier"] == metric_with_ci(y, p, "brier", n_boot=200)
    True
    """
    wanted = _wanted(scores, metrics)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise InvalidConfig(f"n_boot must be a positive integer; got {n_boot!r}.")
    if not 0 < level < 1:
        raise InvalidConfig(f"level must lie strictly between 0 and 1 (e.g. 0.95); got {level!r}.")
    if not 0 <= threshold <= 1:
        raise InvalidConfig(f"threshold must lie in [0, 1]; got {threshold!r}.")

    n, vectors = _vectors(y, scores, wanted, threshold=threshold, n_bins=n_bins, strategy=strategy)
    values = _values(vectors, n)
    boots: list[dict[str, list[np.ndarray]]] = [{name: [] for name in stats} for stats in vectors]
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        w = _resample_counts(rng, b, n)
        for stats, draws in zip(vectors, boots, strict=True):
            cache: dict[str, Any] = {}  # tied-score group counts, shared by ROC AUC and average precision
            for name, stat in stats.items():
                draws[name].append(stat(w, cache))

    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, value, draws_of in zip(scores, values, boots, strict=True):
        out[key] = {}
        for name in wanted[key]:
            draws = np.concatenate(draws_of[name])
            draws = draws[np.isfinite(draws)]
            if np.isnan(value[name]) or len(draws) == 0:
                ci = [float("nan"), float("nan")]
            else:
                ci = [float(v) for v in np.quantile(draws, [lo_q, hi_q])]
            out[key][name] = {"value": value[name], "ci": ci}
    return out


def score_values(
    y: Any,
    scores: Mapping[str, Any],
    *,
    metrics: Sequence[str] | Mapping[str, Sequence[str]] = METRICS,
    threshold: float = 0.5,
    n_bins: int = 10,
    strategy: str = "uniform",
) -> dict[str, dict[str, float]]:
    """The point values :func:`scores_with_ci` reports (``result[name][metric]["value"]``), without resampling.

    The same computation on the same rows, so the same floats: a caller can use them (a report's plots)
    before the intervals are done.
    """
    wanted = _wanted(scores, metrics)
    n, vectors = _vectors(y, scores, wanted, threshold=threshold, n_bins=n_bins, strategy=strategy)
    return {key: {name: value[name] for name in wanted[key]}
            for key, value in zip(scores, _values(vectors, n), strict=True)}


def _wanted(scores: Mapping[str, Any], metrics: Sequence[str] | Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The metric names asked for each score vector, checked."""
    if isinstance(scores, str) or not isinstance(scores, Mapping) or len(scores) == 0:
        raise InvalidConfig(f"scores must map names to score vectors (e.g. {{'model': p}}); got {scores!r}.")
    if isinstance(metrics, Mapping):
        unknown = sorted(set(metrics) - set(scores), key=str)
        absent = [name for name in scores if name not in metrics]
        if unknown or absent:
            raise InvalidConfig(f"metrics must name the metrics of every score vector {list(scores)} and no "
                                f"other; got metrics for {list(metrics)}.")
        wanted = {name: metrics[name] for name in scores}
    else:
        wanted = dict.fromkeys(scores, metrics)
    for names in wanted.values():
        _check_metric_names(names)
    return wanted


def _vectors(y: Any, scores: Mapping[str, Any], wanted: Mapping[str, Sequence[str]], *, threshold: float,
             n_bins: int, strategy: str) -> tuple[int, list[dict[str, _Stat]]]:
    """The number of rows and, per score vector, its metric functions of a count matrix."""
    vectors = []  # per score vector: its metric functions, evaluated on each block of count matrices
    for key, p in scores.items():
        yk, pk = _binary_inputs(y, p, p_name="p" if key == "" else f"scores[{key!r}]")
        order = np.argsort(pk, kind="stable")  # every metric ignores row order, so sort once by score
        yk, pk = yk[order], pk[order]
        vectors.append({
            name: _statistic(name, yk, pk, threshold=threshold, n_bins=n_bins, strategy=strategy)
            for name in dict.fromkeys(wanted[key])
        })
    return len(yk), vectors


def _values(vectors: list[dict[str, _Stat]], n: int) -> list[dict[str, float]]:
    """Each metric on the full sample (every row drawn once)."""
    full = np.ones((1, n))
    return [{name: float(stat(full)[0]) for name, stat in stats.items()} for stats in vectors]


def _check_metric_names(metrics: Any) -> None:
    if isinstance(metrics, str):
        raise InvalidConfig(
            f"metrics must be a sequence of names; got the string {metrics!r}. Use ({metrics!r},)."
        )
    if len(metrics) == 0:
        raise InvalidConfig(f"metrics is empty; give at least one of {list(METRICS)}.")
    for name in metrics:
        _check_choice("metric", name, METRICS)


def _resample_counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """Counts of each row in ``b`` resamples of size ``n`` drawn with replacement: shape (b, n)."""
    idx = rng.integers(0, n, size=(b, n))
    idx += (np.arange(b) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(float)


def _statistic(
    name: str, y: np.ndarray, p: np.ndarray, *, threshold: float, n_bins: int, strategy: str
) -> _Stat:
    """The metric as a function of a count matrix; ``y`` and ``p`` are sorted by ``p``."""
    n = len(y)
    if name == "log_loss":
        return _weighted_mean(_row_log_loss(y, p), n)
    if name == "brier":
        return _weighted_mean((p - y) ** 2, n)
    if name == "accuracy":
        return _weighted_mean(((p >= threshold) == (y == 1)).astype(float), n)
    if name == "ece":
        ids = _bin_ids(p, n_bins, strategy)
        return _ece(y, p, _starts(ids), n)
    ties = _starts(p)
    return _roc_auc(y, ties) if name == "roc_auc" else _average_precision(y, ties)


def _weighted_mean(values: np.ndarray, n: int) -> _Stat:
    def stat(w: np.ndarray, cache: dict[str, Any] | None = None) -> np.ndarray:
        return w @ values / n

    return stat


def _starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _group_counts(w: np.ndarray, y: np.ndarray, starts: np.ndarray,
                  cache: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positives and rows drawn per group of tied scores (groups are contiguous runs of the sorted rows).

    With a ``cache`` (one per count matrix and score vector) the result is computed once and shared;
    callers must not modify the arrays.
    """
    if cache is not None:
        if "groups" not in cache:
            cache["groups"] = _group_counts(w, y, starts)
        return cache["groups"]
    pos = w * y
    if len(starts) < w.shape[1]:  # without ties every row is its own group
        return np.add.reduceat(pos, starts, axis=1), np.add.reduceat(w, starts, axis=1)
    return pos, w


def _cumsum_counts(counts: np.ndarray) -> np.ndarray:
    """``np.cumsum(counts, axis=1)`` of whole counts held as floats, summed as int64 (exact either way, and
    integer additions do not wait on each other's rounding: about 8x faster)."""
    return np.cumsum(counts.astype(np.int64), axis=1).astype(np.float64)


def _roc_auc(y: np.ndarray, ties: np.ndarray) -> _Stat:
    def stat(w: np.ndarray, cache: dict[str, Any] | None = None) -> np.ndarray:
        pos, drawn = _group_counts(w, y, ties, cache)  # ascending scores
        neg = drawn - pos
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        # Mann-Whitney: a positive beats the negatives below it and ties with half of those level with it,
        # i.e. (negatives up to and including its group) - (half of its group's negatives)
        level = _cumsum_counts(neg)
        neg *= 0.5
        level -= neg
        wins = np.einsum("ij,ij->i", pos, level)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_pos * n_neg > 0, wins / (n_pos * n_neg), np.nan)

    return stat


def _average_precision(y: np.ndarray, ties: np.ndarray) -> _Stat:
    def stat(w: np.ndarray, cache: dict[str, Any] | None = None) -> np.ndarray:
        pos, drawn = _group_counts(w, y, ties, cache)
        pos, drawn = pos[:, ::-1], drawn[:, ::-1]  # thresholds from the highest score down
        precision = _cumsum_counts(pos)
        called = _cumsum_counts(drawn)
        np.maximum(called, 1.0, out=called)  # whole counts: where none are called, no positive is either
        precision /= called
        n_pos = pos.sum(axis=1)
        # AP = sum over thresholds of (recall gained) * precision
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_pos > 0, np.einsum("ij,ij->i", pos, precision) / n_pos, np.nan)

    return stat


def _ece(y: np.ndarray, p: np.ndarray, bins: np.ndarray, n: int) -> _Stat:
    def stat(w: np.ndarray, cache: dict[str, Any] | None = None) -> np.ndarray:
        # sum_b (n_b / n) |mean p_b - mean y_b| == sum_b |sum p_b - sum y_b| / n
        gap = np.add.reduceat(w * p, bins, axis=1) - np.add.reduceat(w * y, bins, axis=1)
        return np.abs(gap).sum(axis=1) / n

    return stat
