"""What a drift detector remembers about one reference column, and how it compares a new window.

A numeric column keeps its sorted non-missing values (the two-sample tests need the whole sample),
its standard deviation and its PSI bin edges; a categorical column keeps its value counts. Both
turn into plain JSON with :meth:`to_dict` and back with :meth:`from_dict`. The tests come from
SciPy; the one statistic computed here, :func:`wasserstein_sorted`, returns the number
:func:`scipy.stats.wasserstein_distance` returns (up to rounding), from the stored sorted reference
without sorting it again (SciPy's general version sorts both samples on every call and took longer
than the KS test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats
from scipy.spatial import distance

from loopml.errors import SchemaError

__all__ = [
    "KINDS",
    "CategoricalReference",
    "NumericReference",
    "category_counts",
    "infer_kind",
    "numeric_values",
    "population_stability_index",
    "wasserstein_sorted",
]

KINDS = ("numeric", "categorical")


def infer_kind(column: object, series: pd.Series) -> str:
    """``"numeric"`` for numeric dtypes; ``"categorical"`` for object, string, category and bool."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    ):
        return "categorical"
    raise SchemaError(
        f"Column {column!r} has dtype {dtype}, whose drift test cannot be inferred; "
        f"declare it in kinds= as 'numeric' or 'categorical', or leave it out with columns=."
    )


def numeric_values(column: object, series: pd.Series) -> np.ndarray:
    """The non-missing values of ``series`` as float64; raises if some are not finite numbers."""
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biuf":
        values = series.to_numpy(dtype=float)  # the common case, without pandas' conversion overhead
    else:
        try:
            converted = pd.to_numeric(series, errors="coerce")
        except TypeError as exc:  # e.g. datetimes on some pandas versions
            raise SchemaError(f"Column {column!r} must be numeric; got dtype {series.dtype}.") from exc
        lost = converted.isna() & series.notna()
        if lost.any():
            example = series[lost].iloc[0]
            raise SchemaError(
                f"Column {column!r} is numeric but holds non-numbers, e.g. {example!r} "
                f"(dtype {series.dtype}); clean it or declare it 'categorical' in kinds=."
            )
        values = converted.to_numpy(dtype=float, na_value=np.nan)
    values = values[~np.isnan(values)]
    if not np.isfinite(values).all():
        example = values[~np.isfinite(values)][0]
        raise SchemaError(f"Column {column!r} must hold finite numbers; got {example!r}.")
    return values


def _label(value: object) -> str:
    # Labels are strings so the state is JSON. An integer column that gains a missing value turns
    # float (3 -> 3.0); writing integral numbers without ".0" keeps both windows' labels equal.
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def category_counts(series: pd.Series) -> dict[str, int]:
    """Counts of the non-missing values of ``series``, keyed by their string label."""
    counts: dict[str, int] = {}
    for value, n in series.value_counts(dropna=True).items():
        if n > 0:  # a categorical dtype also lists unused categories
            key = _label(value)
            counts[key] = counts.get(key, 0) + int(n)
    return counts


def population_stability_index(
    reference_counts: np.ndarray, current_counts: np.ndarray, *, epsilon: float = 1e-4
) -> float:
    """PSI = sum over bins of ``(c - r) * ln(c / r)`` for bin proportions ``r`` and ``c``.

    Parameters
    ----------
    reference_counts, current_counts : array of int
        Counts per bin, same bins in the same order.
    epsilon : float
        A bin that is empty in one window would make PSI infinite, so its proportion is taken as
        ``epsilon`` instead (proportions are not renormalised). A bin holding share ``q`` in one window
        and nothing in the other then adds ``(q - epsilon) * ln(q / epsilon)``, about 0.83 for
        ``q = 0.1`` and the default ``1e-4``. Bins empty in both windows add 0.

    Returns
    -------
    float
        Non-negative; 0 exactly when both windows have the same proportions. Computed as the
        symmetrised Kullback-Leibler divergence with :func:`scipy.special.rel_entr`.
    """
    r = np.asarray(reference_counts, dtype=float)
    c = np.asarray(current_counts, dtype=float)
    r = r / r.sum()
    c = c / c.sum()
    r = np.where(r == 0, epsilon, r)
    c = np.where(c == 0, epsilon, c)
    return float(np.sum(special.rel_entr(c, r) + special.rel_entr(r, c)))


def wasserstein_sorted(reference: np.ndarray, current: np.ndarray) -> float:
    """First Wasserstein distance between two samples given sorted; SciPy's value to ~1e-15.

    :func:`scipy.stats.wasserstein_distance` argsorts both samples, sorts their concatenation and
    binary-searches every pooled value in both. With both samples already sorted, one binary search
    places each current value in the merged order, and the two empirical CDFs are running counts.
    The vector of CDF gaps and the vector of steps between pooled values are then the ones SciPy
    builds (a tie only reorders terms multiplied by a zero step). SciPy sums their products with
    :func:`numpy.vecdot`, i.e. BLAS, whose threads made it take 20 ms for 200,000 values on a loaded
    2-core machine; NumPy's pairwise sum takes 0.2 ms and differs from it only by rounding (checked
    against SciPy in the tests).

    Parameters
    ----------
    reference, current : numpy.ndarray
        Non-empty 1-d float arrays of finite values, each sorted ascending.

    Examples
    --------
    >>> wasserstein_sorted(np.array([0.0, 1.0, 3.0]), np.array([5.0, 6.0, 8.0]))
    5.0
    """
    n_ref, n_cur = reference.size, current.size
    # position of each current value in the merged order (after reference values equal to it)
    slots = np.searchsorted(reference, current, side="right") + np.arange(n_cur)
    from_current = np.zeros(n_ref + n_cur, dtype=bool)
    from_current[slots] = True
    pooled = np.empty(n_ref + n_cur)
    pooled[slots] = current
    pooled[~from_current] = reference
    current_counts = np.cumsum(from_current[:-1])
    reference_counts = np.arange(1, n_ref + n_cur) - current_counts
    gaps = np.abs(reference_counts / n_ref - current_counts / n_cur)
    return float(np.sum(gaps * np.diff(pooled)))


def _untested(n_current: int, n_missing: int) -> dict[str, Any]:
    return {"statistic": None, "p_value": None, "wasserstein": None, "wasserstein_sd": None,
            "psi": None, "jensen_shannon": None, "n_current": n_current, "n_missing_current": n_missing}


@dataclass(frozen=True, eq=False)
class NumericReference:
    """Reference state of a numeric column, tested with Kolmogorov-Smirnov.

    Attributes
    ----------
    values : numpy.ndarray
        Sorted non-missing reference values.
    n_missing : int
        Missing values in the reference.
    sd : float
        Sample standard deviation (``ddof=1``) of ``values``; the unit of ``wasserstein_sd``.
    edges : numpy.ndarray
        Interior PSI bin edges: the distinct reference quantiles at 1/n_bins, 2/n_bins, ...; bins are
        ``(-inf, e0), [e0, e1), ..., [e_last, inf)``, so tied data gives fewer bins.
    counts : numpy.ndarray
        Reference values per PSI bin.
    """

    values: np.ndarray
    n_missing: int
    sd: float
    edges: np.ndarray
    counts: np.ndarray

    kind = "numeric"
    test = "ks"

    @classmethod
    def fit(cls, column: object, series: pd.Series, *, n_bins: int) -> NumericReference:
        values = np.sort(numeric_values(column, series))
        if values.size == 0:
            edges = np.empty(0)
        else:
            edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]))
        sd = float(np.std(values, ddof=1)) if values.size >= 2 else 0.0
        return cls(values, len(series) - values.size, sd, edges, cls._bin(edges, values))

    @staticmethod
    def _bin(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)

    def compare(self, column: object, series: pd.Series, *, epsilon: float) -> dict[str, Any]:
        """KS test, Wasserstein distance and PSI of ``series`` against the reference."""
        current = numeric_values(column, series)
        n_missing = len(series) - current.size
        if current.size == 0 or self.values.size == 0:
            return _untested(current.size, n_missing)
        current = np.sort(current)
        ks = stats.ks_2samp(self.values, current)
        w = wasserstein_sorted(self.values, current)
        # A constant reference has no scale: report None, and any move away from it passes the floor.
        w_sd = w / self.sd if self.sd > 0 else None
        psi = population_stability_index(self.counts, self._bin(self.edges, current), epsilon=epsilon)
        return {"statistic": float(ks.statistic), "p_value": float(ks.pvalue), "wasserstein": w,
                "wasserstein_sd": w_sd, "psi": psi, "jensen_shannon": None,
                "n_current": int(current.size), "n_missing_current": n_missing}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "values": self.values.tolist(), "n_missing": self.n_missing,
                "sd": self.sd, "edges": self.edges.tolist(), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericReference:
        return cls(np.asarray(data["values"], dtype=float), int(data["n_missing"]), float(data["sd"]),
                   np.asarray(data["edges"], dtype=float), np.asarray(data["counts"], dtype=np.int64))

    @property
    def n(self) -> int:
        return int(self.values.size)


@dataclass(frozen=True, eq=False)
class CategoricalReference:
    """Reference state of a categorical column, tested with a chi-square test of homogeneity.

    Attributes
    ----------
    counts : dict of str to int
        Non-missing reference values per category label (``str`` of the value; integral numbers
        without a trailing ``.0``).
    n_missing : int
        Missing values in the reference.
    """

    counts: dict[str, int]
    n_missing: int

    kind = "categorical"
    test = "chi2"

    @classmethod
    def fit(cls, column: object, series: pd.Series, *, n_bins: int) -> CategoricalReference:
        counts = category_counts(series)
        return cls(counts, len(series) - sum(counts.values()))

    def compare(self, column: object, series: pd.Series, *, epsilon: float) -> dict[str, Any]:
        """Chi-square homogeneity test, Jensen-Shannon distance and PSI against the reference.

        Both windows' counts form a categories x 2 contingency table (categories seen in either
        window, sorted by label) for :func:`scipy.stats.chi2_contingency`: Pearson's statistic,
        without Yates' continuity correction, which only applies to two categories and only makes
        the test conservative. Neither window's proportions are treated as exact.
        """
        current = category_counts(series)
        n_current = sum(current.values())
        n_missing = len(series) - n_current
        if n_current == 0 or not self.counts:
            return _untested(n_current, n_missing)
        labels = sorted(set(self.counts) | set(current))
        ref = np.array([self.counts.get(k, 0) for k in labels], dtype=np.int64)
        cur = np.array([current.get(k, 0) for k in labels], dtype=np.int64)
        chi2 = stats.chi2_contingency(np.column_stack([ref, cur]), correction=False)
        js = float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2))
        psi = population_stability_index(ref, cur, epsilon=epsilon)
        return {"statistic": float(chi2.statistic), "p_value": float(chi2.pvalue), "wasserstein": None,
                "wasserstein_sd": None, "psi": psi, "jensen_shannon": js,
                "n_current": n_current, "n_missing_current": n_missing}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "counts": dict(self.counts), "n_missing": self.n_missing}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoricalReference:
        return cls({str(k): int(v) for k, v in data["counts"].items()}, int(data["n_missing"]))

    @property
    def n(self) -> int:
        return int(sum(self.counts.values()))
