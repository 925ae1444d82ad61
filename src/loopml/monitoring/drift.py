"""Feature drift: has a column's distribution moved between a reference and a current window?

Each column gets one primary test, whose p-values are adjusted across columns
(:mod:`loopml.monitoring.multiple_testing`), and secondary distances that say how far it moved:

- numeric columns: the two-sample Kolmogorov-Smirnov test (:func:`scipy.stats.ks_2samp`, "ks");
  Wasserstein distance, raw and in reference standard deviations
  (:func:`scipy.stats.wasserstein_distance`); PSI on bins cut at reference quantiles.
- categorical columns: the chi-square test of homogeneity on the categories x windows table of
  counts (:func:`scipy.stats.chi2_contingency`, "chi2"); Jensen-Shannon distance, base 2, in [0, 1]
  (:func:`scipy.spatial.distance.jensenshannon`); PSI on categories.

A column has drifted when its adjusted p-value is below ``alpha`` *and* its effect clears every
floor that applies to it (``min_psi``; ``min_wasserstein`` for numeric columns;
``min_jensen_shannon`` for categorical ones). With a large window the tests detect shifts too small
to matter, and the floors keep those from alarming. By default a numeric column must have moved by
at least 0.02 reference standard deviations (Wasserstein) and a categorical one by a Jensen-Shannon
distance of at least 0.02 (``DEFAULT_MIN_EFFECT``); ``min_psi`` is off (0). Why 0.02: on 100,000
against 100,000 rows drawn from one distribution, no column of 60 moved more than 0.012 sd or 0.014
JS (``bench/bench_drift.py``'s null windows), while shifts worth an alarm (0.1 sd in mean, 10% in
scale, a few points of category share) score 0.05-0.1; and at the sizes where 0.02 is within the noise
(a few thousand rows) the tests themselves cannot see shifts that small. Pass 0 to test without a floor.

Missing values are left out of the tests and reported as a rate per window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator

from loopml.errors import InvalidConfig, NotReady, SchemaError, closest
from loopml.monitoring.drift_reference import KINDS, CategoricalReference, NumericReference, infer_kind
from loopml.monitoring.multiple_testing import adjust_p_values, check_correction

__all__ = ["DEFAULT_MIN_EFFECT", "ColumnDrift", "DriftDetector", "DriftResult", "drift_report"]

DEFAULT_MIN_EFFECT = 0.02  # default min_wasserstein (sd units) and min_jensen_shannon; see the module doc

_FORMAT = "loopml.drift/1"
_Reference = NumericReference | CategoricalReference
_REFERENCE_TYPES: dict[str, type[NumericReference | CategoricalReference]] = {
    "numeric": NumericReference,
    "categorical": CategoricalReference,
}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class ColumnDrift:
    """Drift test result for one column; ``None`` marks a value that could not be computed.

    ``statistic`` and ``p_value`` belong to ``test`` ("ks" or "chi2"); they are ``None`` when a window
    has no non-missing values, and such a column is left out of the multiple-testing adjustment.
    """

    column: Any
    kind: str
    test: str
    statistic: float | None
    p_value: float | None
    p_value_adjusted: float | None
    drifted: bool
    wasserstein: float | None
    wasserstein_sd: float | None
    psi: float | None
    jensen_shannon: float | None
    n_reference: int
    n_current: int
    missing_rate_reference: float | None
    missing_rate_current: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (no NaN or infinity; those become ``None``)."""
        return {k: _finite(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DriftResult:
    """Result of :meth:`DriftDetector.test`: one :class:`ColumnDrift` per reference column."""

    columns: tuple[ColumnDrift, ...]
    drifted: bool
    correction: str
    alpha: float
    n_reference: int
    n_current: int

    @property
    def drifted_columns(self) -> list[Any]:
        """Names of the columns that drifted, in reference order."""
        return [c.column for c in self.columns if c.drifted]

    def __getitem__(self, column: object) -> ColumnDrift:
        for c in self.columns:
            if c.column == column:
                return c
        tested = [c.column for c in self.columns]
        raise SchemaError(f"No drift result for column {column!r}; tested: {tested}.")

    def to_dict(self) -> dict[str, Any]:
        """``{"columns": [...], "drifted": bool, ...}``: the JSON the CLI prints."""
        return {
            "columns": [c.to_dict() for c in self.columns],
            "drifted": self.drifted,
            "drifted_columns": self.drifted_columns,
            "correction": self.correction,
            "alpha": self.alpha,
            "n_tests": sum(c.p_value is not None for c in self.columns),
            "n_reference": self.n_reference,
            "n_current": self.n_current,
        }


class DriftDetector(BaseEstimator):
    """Per-column drift tests of a current window against a stored reference.

    Parameters
    ----------
    correction : {"bh", "bonferroni", "none"}
        Multiple-testing adjustment across columns: Benjamini-Hochberg (false discovery rate),
        Bonferroni (family-wise error rate) or none.
    alpha : float
        A column can drift only if its adjusted p-value is below ``alpha``.
    min_psi : float
        Effect floor on PSI for every column; 0 (the default) turns it off. 0.1 is a common
        "moderate shift" mark.
    min_wasserstein : float
        Effect floor for numeric columns on the Wasserstein distance in units of the reference
        standard deviation (a mean shift of 0.1 sd scores 0.1); default 0.02, 0 turns it off.
    min_jensen_shannon : float
        Effect floor for categorical columns on the Jensen-Shannon distance (base 2); default 0.02,
        0 turns it off.
    n_bins : int
        PSI bins for numeric columns, cut at reference quantiles.
    psi_epsilon : float
        Proportion used for a PSI bin that is empty in one window, so PSI stays finite (see
        :func:`~loopml.monitoring.drift_reference.population_stability_index`).
    kinds : mapping of column to {"numeric", "categorical"}, optional
        Declared kinds; other columns are inferred: numeric dtypes are numeric, object, string,
        category and bool are categorical.
    columns : sequence, optional
        Columns to monitor; default every column of the reference.

    Attributes
    ----------
    columns_ : list
        Monitored columns, in order.
    kinds_ : dict
        Kind of each monitored column.
    references_ : dict
        Per column, its reference state (sorted values, sd and PSI bin edges and counts; or value
        counts).
    n_reference_ : int
        Rows in the reference.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)})
    >>> cur = pd.DataFrame({"x": rng.normal(0.2, 1, 5000), "c": rng.choice(["a", "b"], 5000)})
    >>> result = DriftDetector().fit(ref).test(cur)
    >>> result.drifted, result.drifted_columns
    (True, ['x'])
    """

    def __init__(
        self,
        correction: str = "bh",
        alpha: float = 0.05,
        *,
        min_psi: float = 0.0,
        min_wasserstein: float = DEFAULT_MIN_EFFECT,
        min_jensen_shannon: float = DEFAULT_MIN_EFFECT,
        n_bins: int = 10,
        psi_epsilon: float = 1e-4,
        kinds: Mapping[Any, str] | None = None,
        columns: Sequence[Any] | None = None,
    ) -> None:
        self.correction = correction
        self.alpha = alpha
        self.min_psi = min_psi
        self.min_wasserstein = min_wasserstein
        self.min_jensen_shannon = min_jensen_shannon
        self.n_bins = n_bins
        self.psi_epsilon = psi_epsilon
        self.kinds = kinds
        self.columns = columns

    def _check_params(self) -> None:
        check_correction(self.correction)
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise InvalidConfig(f"alpha must be a number in (0, 1), e.g. 0.05; got {self.alpha!r}.")
        for name in ("min_psi", "min_wasserstein", "min_jensen_shannon"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InvalidConfig(f"{name} must be a finite number >= 0 (0 turns it off); got {value!r}.")
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise InvalidConfig(f"n_bins must be an integer >= 2, e.g. 10; got {self.n_bins!r}.")
        if not (isinstance(self.psi_epsilon, float) and 0 < self.psi_epsilon < 0.01):
            raise InvalidConfig(
                f"psi_epsilon must be a float in (0, 0.01), e.g. 1e-4; got {self.psi_epsilon!r}."
            )
        for column, kind in (self.kinds or {}).items():
            if kind not in KINDS:
                raise InvalidConfig(f"kinds[{column!r}] must be one of {list(KINDS)}; got {kind!r}.")

    def fit(self, reference: pd.DataFrame) -> DriftDetector:
        """Compute and store the reference state of each monitored column.

        Raises
        ------
        SchemaError
            If ``columns`` or ``kinds`` name a column the reference lacks, a column's kind cannot be
            inferred, or a numeric column holds non-numbers.
        """
        self._check_params()
        kinds = dict(self.kinds or {})
        names = list(reference.columns) if self.columns is None else list(self.columns)
        _require_columns(reference, [*names, *kinds], "the reference")
        self.columns_ = names
        self.kinds_ = {c: kinds.get(c) or infer_kind(c, reference[c]) for c in names}
        self.references_: dict[Any, _Reference] = {
            c: _REFERENCE_TYPES[self.kinds_[c]].fit(c, reference[c], n_bins=self.n_bins) for c in names
        }
        self.n_reference_ = len(reference)
        return self

    def test(self, current: pd.DataFrame) -> DriftResult:
        """Test every monitored column of ``current`` against the reference.

        Raises
        ------
        NotReady
            If the detector has not been fitted (or loaded with :meth:`from_dict`).
        SchemaError
            If ``current`` lacks a monitored column (extra columns are ignored) or a numeric column
            holds non-numbers.
        """
        if not hasattr(self, "references_"):
            raise NotReady(
                "This DriftDetector has no reference yet; call fit(reference) or from_dict() first."
            )
        self._check_params()
        _require_columns(current, self.columns_, "the current window")
        raw = {c: ref.compare(c, current[c], epsilon=self.psi_epsilon) for c, ref in self.references_.items()}
        adjusted = adjust_p_values([r["p_value"] for r in raw.values()], method=self.correction)
        results = []
        for (column, r), p_adj in zip(raw.items(), adjusted, strict=True):
            ref = self.references_[column]
            p_adj_value = _finite(float(p_adj))
            results.append(
                ColumnDrift(
                    column=column,
                    kind=ref.kind,
                    test=ref.test,
                    statistic=r["statistic"],
                    p_value=r["p_value"],
                    p_value_adjusted=p_adj_value,
                    drifted=p_adj_value is not None and p_adj_value < self.alpha and self._clears_floors(r),
                    wasserstein=r["wasserstein"],
                    wasserstein_sd=r["wasserstein_sd"],
                    psi=r["psi"],
                    jensen_shannon=r["jensen_shannon"],
                    n_reference=ref.n,
                    n_current=r["n_current"],
                    missing_rate_reference=_rate(ref.n_missing, self.n_reference_),
                    missing_rate_current=_rate(r["n_missing_current"], len(current)),
                )
            )
        return DriftResult(tuple(results), any(c.drifted for c in results), self.correction,
                           float(self.alpha), self.n_reference_, len(current))

    def _clears_floors(self, r: dict[str, Any]) -> bool:
        if r["psi"] < self.min_psi:
            return False
        # wasserstein_sd is None for a constant reference: any move off a constant is large.
        if r["wasserstein_sd"] is not None and r["wasserstein_sd"] < self.min_wasserstein:
            return False
        return not (r["jensen_shannon"] is not None and r["jensen_shannon"] < self.min_jensen_shannon)

    def to_dict(self) -> dict[str, Any]:
        """Parameters and reference state as plain JSON types (``json.dumps`` works on it).

        Floats survive ``json`` exactly, so a detector restored with :meth:`from_dict` gives the same
        results as this one. Numeric columns store every non-missing reference value.
        """
        if not hasattr(self, "references_"):
            raise NotReady("This DriftDetector has no reference to save yet; call fit(reference) first.")
        return {
            "format": _FORMAT,
            "params": {
                **self.get_params(),
                # a list of pairs, since column names need not be strings
                "kinds": None if self.kinds is None else [[c, k] for c, k in self.kinds.items()],
                "columns": None if self.columns is None else list(self.columns),
            },
            "n_reference": self.n_reference_,
            "columns": [{"column": c, **self.references_[c].to_dict()} for c in self.columns_],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftDetector:
        """A fitted detector from the output of :meth:`to_dict` (e.g. after a JSON round trip)."""
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise InvalidConfig(f"Not a stored drift reference: expected format {_FORMAT!r}; got {got!r}.")
        try:
            params = dict(data["params"])
            if params["kinds"] is not None:
                params["kinds"] = {c: k for c, k in params["kinds"]}
            detector = cls(**params)
            entries = list(data["columns"])
            detector.columns_ = [e["column"] for e in entries]
            detector.kinds_ = {e["column"]: e["kind"] for e in entries}
            detector.references_ = {
                e["column"]: _REFERENCE_TYPES[e["kind"]].from_dict(e) for e in entries
            }
            detector.n_reference_ = int(data["n_reference"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidConfig(f"Stored drift reference is malformed: {type(exc).__name__}: {exc}.") from exc
        detector._check_params()
        return detector


def _rate(n_missing: int, n_rows: int) -> float | None:
    return n_missing / n_rows if n_rows else None


def _require_columns(frame: pd.DataFrame, names: Sequence[Any], where: str) -> None:
    present = list(frame.columns)
    missing = [c for c in dict.fromkeys(names) if c not in present]
    if missing:
        hints = {c: closest(str(c), map(str, present)) for c in missing if isinstance(c, str)}
        hint = "".join(f" Closest matches for {c!r}: {m}." for c, m in hints.items() if m)
        raise SchemaError(
            f"Column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} missing from {where}, "
            f"which has columns {present}.{hint}"
        )
    repeated = [c for c in dict.fromkeys(names) if present.count(c) > 1]
    if repeated:
        raise SchemaError(f"Column names must be unique; {where} repeats {repeated}.")


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    kinds: dict[str, str] | None = None,
    correction: str = "bh",
    alpha: float = 0.05,
    min_psi: float = 0.0,
    min_wasserstein: float = DEFAULT_MIN_EFFECT,
    min_jensen_shannon: float = DEFAULT_MIN_EFFECT,
    n_bins: int = 10,
    columns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Drift of every column of ``reference`` in ``current``, as a JSON-safe dict.

    Shorthand for ``DriftDetector(...).fit(reference).test(current).to_dict()``; see
    :class:`DriftDetector` for the parameters.

    Returns
    -------
    dict
        ``{"columns": [{"column", "kind", "test", "statistic", "p_value", "p_value_adjusted",
        "drifted", "wasserstein", "wasserstein_sd", "psi", "jensen_shannon", "n_reference",
        "n_current", "missing_rate_reference", "missing_rate_current"}, ...], "drifted": bool,
        "drifted_columns", "correction", "alpha", "n_tests", "n_reference", "n_current"}``.
        ``test`` is "ks" (numeric) or "chi2" (categorical); values that cannot be computed are
        ``None``, never NaN.
    """
    detector = DriftDetector(
        correction, alpha, min_psi=min_psi, min_wasserstein=min_wasserstein,
        min_jensen_shannon=min_jensen_shannon, n_bins=n_bins, kinds=kinds, columns=columns,
    )
    return detector.fit(reference).test(current).to_dict()
