"""Slice analysis: where in the data a model is worse than it is overall.

A slice is the rows sharing one value of one column (``carrier == "UA"``) or, for a numeric column
given ``bands``, one band of values (``distance in [500, 1000)``). Every metric is computed per slice
with at least ``min_support`` rows. :func:`worst_slices` asks which slices have a significantly higher
log loss than the rest of the data; :func:`compare_slices` asks where a challenger model is worse than
the champion, for a promotion gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, rankdata, ttest_ind_from_stats, ttest_rel

from loopml.errors import InvalidConfig, SchemaError, closest
from loopml.evaluation._inputs import _binary_inputs, _row_log_loss

__all__ = ["compare_slices", "slice_metrics", "worst_slices"]

Bands = Mapping[str, Sequence[float]]


def slice_metrics(
    frame: pd.DataFrame,
    y: Any,
    p: Any,
    columns: Sequence[str],
    *,
    min_support: int = 500,
    bands: Bands | None = None,
) -> list[dict[str, Any]]:
    """Log loss, ROC AUC, Brier score and positive rate of every slice with enough rows.

    Parameters
    ----------
    frame
        The rows' attributes; ``y`` and ``p`` are aligned with it by position.
    y, p
        Binary labels and predicted probabilities.
    columns
        The columns to slice by, one at a time.
    min_support
        Slices with fewer rows are left out.
    bands
        Bin edges for numeric columns, e.g. ``{"distance": [0, 500, 1000, 2000, 5000]}``. Bands are
        left-closed, ``[500, 1000)``; values below the first edge or at or above the last fall in
        ``[-inf, 0)`` and ``[5000, inf)``.

    Returns
    -------
    list of dict
        One dict per slice, by column and then by value (band order for banded columns):
        ``{"column", "value", "n", "log_loss", "auc", "brier", "positive_rate"}``. ``value`` is a band
        label such as ``"[500, 1000)"`` for banded columns and ``None`` for missing values; ``auc`` is
        ``None`` when the slice holds one class. Log loss clips scores as ``binary_metrics`` does.

    Examples
    --------
    >>> frame = pd.DataFrame({"carrier": ["UA", "UA", "AA", "AA"]})
    >>> out = slice_metrics(frame, [0, 1, 0, 1], [0.2, 0.7, 0.4, 0.4], ["carrier"], min_support=2)
    >>> [(s["value"], s["n"], s["auc"]) for s in out]
    [('AA', 2, 0.5), ('UA', 2, 1.0)]
    """
    y, p = _aligned(frame, y, p)
    loss = _row_log_loss(y, p)
    return [
        _metrics(col, value, idx, y, p, loss)
        for col, value, idx in _slices(frame, columns, bands, min_support)
    ]


def worst_slices(
    frame: pd.DataFrame,
    y: Any,
    p: Any,
    columns: Sequence[str],
    *,
    min_support: int = 500,
    bands: Bands | None = None,
    fdr: float = 0.05,
) -> list[dict[str, Any]]:
    """Slices whose log loss is significantly higher than that of the rest of the rows.

    Each slice with at least ``min_support`` rows is tested against the other rows with a one-sided
    Welch t-test on per-row log losses (what ``scipy.stats.ttest_ind(slice, rest, equal_var=False,
    alternative="greater")`` computes, here from the two samples' means and variances). The p-values of
    all slices of all columns form one family, adjusted with Benjamini-Hochberg
    (``scipy.stats.false_discovery_control``); a slice is reported when its adjusted p-value is at most
    ``fdr``.

    Log loss also measures how hard a slice is: even a perfect model has a higher log loss where the
    positive rate is nearer one half. A flagged slice is worse than the rest, not necessarily worse than
    it could be; :func:`compare_slices` against a reference model separates the two.

    Parameters
    ----------
    frame, y, p, columns, min_support, bands
        As in :func:`slice_metrics`.
    fdr
        The false discovery rate to control across the tested slices.

    Returns
    -------
    list of dict
        The flagged slices, worst excess first: the keys of :func:`slice_metrics` plus ``"rest_n"``,
        ``"rest_log_loss"``, ``"excess_log_loss"`` (slice minus rest), ``"t_statistic"``, ``"p_value"``
        and ``"q_value"`` (the BH-adjusted p-value).
    """
    if not 0 < fdr < 1:
        raise InvalidConfig(f"fdr must lie strictly between 0 and 1 (e.g. 0.05); got {fdr!r}.")
    y, p = _aligned(frame, y, p)
    loss = _row_log_loss(y, p)
    tested, stats = [], []
    for col, value, idx in _slices(frame, columns, bands, min_support):
        rest = np.ones(len(y), dtype=bool)
        rest[idx] = False
        if rest.sum() < 2 or len(idx) < 2:
            continue  # a test needs two rows on each side
        tested.append((col, value, idx))
        stats.append(
            (
                loss[idx].mean(),
                loss[idx].std(ddof=1),
                len(idx),
                loss[rest].mean(),
                loss[rest].std(ddof=1),
                rest.sum(),
            )
        )
    if not tested:
        return []
    # Welch's test from the samples' means and variances: ttest_ind(equal_var=False) in one vectorised call
    m1, s1, n1, m2, s2, n2 = np.array(stats, dtype=float).T
    with np.errstate(invalid="ignore", divide="ignore"):
        res = ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False, alternative="greater")
    pvalues = np.atleast_1d(res.pvalue)
    qvalues = false_discovery_control(np.nan_to_num(pvalues, nan=1.0), method="bh")
    flagged = []
    for i in np.flatnonzero(qvalues <= fdr):
        col, value, idx = tested[i]
        row = _metrics(col, value, idx, y, p, loss)
        row.update(
            rest_n=int(n2[i]),
            rest_log_loss=float(m2[i]),
            excess_log_loss=float(m1[i] - m2[i]),
            t_statistic=float(np.atleast_1d(res.statistic)[i]),
            p_value=float(pvalues[i]),
            q_value=float(qvalues[i]),
        )
        flagged.append(row)
    return sorted(flagged, key=lambda r: -r["excess_log_loss"])


def compare_slices(
    frame: pd.DataFrame,
    y: Any,
    p_challenger: Any,
    p_champion: Any,
    columns: Sequence[str],
    *,
    min_support: int = 500,
    max_worse: float = 0.01,
    bands: Bands | None = None,
) -> list[dict[str, Any]]:
    """Slices where the challenger's log loss exceeds the champion's by more than ``max_worse``.

    Meant as a promotion gate: promote only if this list is empty.

    Parameters
    ----------
    frame, y, columns, min_support, bands
        As in :func:`slice_metrics`.
    p_challenger, p_champion
        The two models' probabilities for the same rows.
    max_worse
        Largest tolerated increase of a slice's mean log loss, in nats (absolute, not relative).

    Returns
    -------
    list of dict
        The offending slices, largest difference first: ``{"column", "value", "n",
        "challenger_log_loss", "champion_log_loss", "difference", "p_value"}``. ``p_value`` is a
        one-sided paired t-test of the per-row differences (information only: the gate is
        ``difference > max_worse``).
    """
    if not np.isfinite(max_worse) or max_worse < 0:
        raise InvalidConfig(
            f"max_worse must be a non-negative number of nats (e.g. 0.01); got {max_worse!r}."
        )
    y, p_new = _aligned(frame, y, p_challenger, p_name="p_challenger")
    _, p_old = _aligned(frame, y, p_champion, p_name="p_champion")
    new, old = _row_log_loss(y, p_new), _row_log_loss(y, p_old)
    worse = []
    for col, value, idx in _slices(frame, columns, bands, min_support):
        diff = float(new[idx].mean() - old[idx].mean())
        if diff > max_worse:
            pvalue = ttest_rel(new[idx], old[idx], alternative="greater").pvalue if len(idx) > 1 else np.nan
            worse.append(
                {
                    "column": col,
                    "value": value,
                    "n": len(idx),
                    "challenger_log_loss": float(new[idx].mean()),
                    "champion_log_loss": float(old[idx].mean()),
                    "difference": diff,
                    "p_value": float(pvalue),
                }
            )
    return sorted(worse, key=lambda r: -r["difference"])


def _aligned(frame: pd.DataFrame, y: Any, p: Any, *, p_name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(f"frame must be a pandas DataFrame; got {type(frame).__name__}.")
    y, p = _binary_inputs(y, p, p_name=p_name)
    if len(y) != len(frame):
        raise SchemaError(
            f"frame has {len(frame)} rows but y and {p_name} have {len(y)}; they must be aligned."
        )
    return y, p


def _metrics(
    col: str, value: Any, idx: np.ndarray, y: np.ndarray, p: np.ndarray, loss: np.ndarray
) -> dict[str, Any]:
    ys, ps = y[idx], p[idx]
    both = 0 < ys.sum() < len(ys)
    return {
        "column": col,
        "value": value,
        "n": len(idx),
        "log_loss": float(loss[idx].mean()),
        "auc": _auc(ys, ps) if both else None,
        "brier": float(np.mean((ps - ys) ** 2)),
        "positive_rate": float(ys.mean()),
    }


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula with average ranks for ties: scikit-learn's value, faster."""
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    return float((rankdata(p)[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _slices(
    frame: pd.DataFrame, columns: Sequence[str], bands: Bands | None, min_support: int
) -> list[tuple[str, Any, np.ndarray]]:
    """``(column, value, row positions)`` of every slice with at least ``min_support`` rows."""
    if isinstance(columns, str) or len(columns) == 0:
        raise InvalidConfig(f"columns must be a non-empty list of column names; got {columns!r}.")
    if isinstance(min_support, bool) or not isinstance(min_support, (int, np.integer)) or min_support < 1:
        raise InvalidConfig(f"min_support must be a positive integer; got {min_support!r}.")
    bands = dict(bands or {})
    for col in bands:
        if col not in columns:
            raise InvalidConfig(f"bands are given for {col!r}, which is not among columns {list(columns)}.")
    out = []
    for col in columns:
        if col not in frame.columns:
            hint = closest(str(col), [str(c) for c in frame.columns])
            raise SchemaError(
                f"Column {col!r} is not in the frame." + (f" Closest matches: {hint}." if hint else "")
            )
        codes, labels = _band(frame[col], bands[col]) if col in bands else _categories(frame[col])
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(-1, len(labels) + 1))
        for code in range(-1, len(labels)):  # -1: missing values
            idx = order[bounds[code + 1] : bounds[code + 2]]
            if len(idx) >= min_support:
                out.append((col, None if code < 0 else labels[code], idx))
    return out


def _categories(values: pd.Series) -> tuple[np.ndarray, list[Any]]:
    try:
        codes, uniques = pd.factorize(values, sort=True)
    except TypeError:  # values of mixed types that do not sort
        codes, uniques = pd.factorize(values, sort=False)
    return codes, [v.item() if isinstance(v, np.generic) else v for v in uniques]


def _band(values: pd.Series, edges: Sequence[float]) -> tuple[np.ndarray, list[str]]:
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or len(e) < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise InvalidConfig(
            f"Band edges for {values.name!r} must be two or more finite, strictly increasing "
            f"numbers; got {list(edges)!r}."
        )
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        example = values.dropna().iloc[0] if values.notna().any() else None
        raise SchemaError(
            f"Column {values.name!r} must be numeric to be banded; got {values.dtype} (e.g. {example!r})."
        )
    full = np.r_[-np.inf, e, np.inf]
    labels = [f"[{lo:g}, {hi:g})" for lo, hi in zip(full[:-1], full[1:], strict=True)]
    x = values.to_numpy(dtype=float, na_value=np.nan)
    codes = np.searchsorted(e, x, side="right")  # 0: below the first edge; len(e): at or above the last
    codes[np.isnan(x)] = -1
    return codes, labels
