"""Data quality of a batch against a reference: missing values, ranges, categories, schema, staleness.

:class:`DataQuality` learns a profile of a reference table (the training window): each column's
kind, missing rate, observed range and set of categories. :meth:`DataQuality.check` then reports,
for any later batch -- an ingested segment or the features of served requests --

* the missing rate per column, beside the reference's;
* the share of numeric values outside the reference range ``[min, max]`` (widened by
  ``range_tolerance`` times the range on each side), and the most extreme value;
* the share of categorical values never seen in the reference, with examples;
* schema violations: a column the reference had that the batch lacks, a column the batch has that
  the reference did not, and values of the wrong type (text in a numeric column), each naming the
  column, what was expected and an offending value.

:func:`feature_staleness` measures, for each served row and each feature computed from events,
how old the newest event behind it was at prediction time, from the events' *available* times (a
point-in-time as-of join: only events already available at the prediction time count).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loopml.errors import InvalidConfig, NotReady, SchemaError
from loopml.events.log import duckdb_connect

__all__ = ["ColumnProfile", "DataQuality", "feature_staleness"]

_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ColumnProfile:
    """What the reference showed about one column."""

    name: str
    kind: str  # "numeric" | "categorical"
    missing_rate: float
    minimum: float | None = None
    maximum: float | None = None
    categories: frozenset[str] = field(default_factory=frozenset)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"column": self.name, "kind": self.kind, "missing_rate": self.missing_rate}
        if self.kind == "numeric":
            out.update(minimum=self.minimum, maximum=self.maximum)
        else:
            out["categories"] = len(self.categories)
        return out


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


class DataQuality:
    """Profile a reference table, then check batches against it (see module docstring).

    Parameters
    ----------
    categorical
        Columns to treat as categorical even if they hold numbers; other non-numeric columns are
        categorical too.
    range_tolerance
        Widen the reference range by this fraction of its width on each side before calling a
        value out of range (0 = the exact observed ``[min, max]``).
    allow_extra_columns
        If false, a column absent from the reference is a schema violation.

    Examples
    --------
    >>> ref = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]})
    >>> cur = pd.DataFrame({"x": [2.0, 9.0, None], "c": ["a", "z", "b"]})
    >>> report = DataQuality().fit(ref).check(cur)
    >>> report["columns"][0]["out_of_range_rate"], report["columns"][1]["unseen_category_rate"]
    (0.5, 0.3333333333333333)
    """

    def __init__(self, *, categorical: Iterable[str] = (), range_tolerance: float = 0.0,
                 allow_extra_columns: bool = True) -> None:
        self.categorical = tuple(categorical)
        self.range_tolerance = range_tolerance
        self.allow_extra_columns = allow_extra_columns

    def fit(self, reference: pd.DataFrame, *, columns: Sequence[str] | None = None) -> DataQuality:
        """Learn each column's profile from ``reference`` (all columns unless ``columns`` is given)."""
        if not isinstance(self.range_tolerance, (int, float)) or not self.range_tolerance >= 0:
            raise InvalidConfig(f"DataQuality.range_tolerance must be a number >= 0; got {self.range_tolerance!r}")
        names = list(reference.columns) if columns is None else list(columns)
        missing = [c for c in names if c not in reference.columns]
        if missing:
            raise SchemaError(f"DataQuality.fit: reference has no column(s) {missing}; it has {list(reference.columns)}")
        profiles = {}
        for c in names:
            s = reference[c]
            miss = float(s.isna().mean()) if len(s) else 0.0
            if c not in self.categorical and _is_numeric(s):
                v = s.dropna().astype(float)
                profiles[c] = ColumnProfile(c, "numeric", miss, float(v.min()) if len(v) else None,
                                            float(v.max()) if len(v) else None)
            else:
                profiles[c] = ColumnProfile(c, "categorical", miss,
                                            categories=frozenset(str(v) for v in pd.unique(s.dropna())))
        self.reference_ = profiles
        self.n_reference_ = len(reference)
        return self

    def check(self, frame: pd.DataFrame) -> dict[str, Any]:
        """Quality of ``frame`` against the reference: per-column numbers and schema violations."""
        if not hasattr(self, "reference_"):
            raise NotReady("DataQuality.check called before fit(); fit it on a reference table first")
        violations: list[dict[str, Any]] = []
        columns = []
        for name, prof in self.reference_.items():
            if name not in frame.columns:
                violations.append({"column": name, "problem": "missing_column", "expected": prof.kind, "got": None,
                                   "message": f"column {name!r} ({prof.kind}) is missing from the batch"})
                continue
            columns.append(self._column(prof, frame[name], violations))
        if not self.allow_extra_columns:
            for name in frame.columns:
                if name not in self.reference_:
                    violations.append({"column": str(name), "problem": "unexpected_column", "expected": None,
                                       "got": str(frame[name].dtype),
                                       "message": f"column {name!r} is not in the reference "
                                                  f"(known: {sorted(self.reference_)})"})
        return {"rows": len(frame), "columns": columns, "schema_violations": violations,
                "passed": not violations}

    def _column(self, prof: ColumnProfile, s: pd.Series, violations: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(s)
        out: dict[str, Any] = {"column": prof.name, "kind": prof.kind,
                               "missing_rate": float(s.isna().mean()) if n else 0.0,
                               "reference_missing_rate": prof.missing_rate}
        present = s.dropna()
        if prof.kind == "numeric":
            values = present if _is_numeric(present) else pd.to_numeric(present, errors="coerce")
            bad = values.isna()
            if bad.any():
                example = present[bad].iloc[0]
                violations.append({"column": prof.name, "problem": "wrong_type", "expected": "numeric",
                                   "got": type(example).__name__, "example": str(example), "count": int(bad.sum()),
                                   "message": f"column {prof.name!r} must be numeric; got {int(bad.sum())} "
                                              f"non-numeric value(s) (e.g. {example!r})"})
            v = values[~bad].to_numpy(float)
            out["out_of_range_rate"], out["out_of_range_examples"] = 0.0, []
            if len(v) and prof.minimum is not None and prof.maximum is not None:
                slack = self.range_tolerance * (prof.maximum - prof.minimum)
                outside = (v < prof.minimum - slack) | (v > prof.maximum + slack)
                out["out_of_range_rate"] = float(outside.mean())
                worst = v[outside]
                if len(worst):
                    order = np.argsort(-np.abs(worst - (prof.minimum + prof.maximum) / 2))
                    out["out_of_range_examples"] = [float(x) for x in worst[order][:_MAX_EXAMPLES]]
            out["reference_range"] = [prof.minimum, prof.maximum]
        else:
            # compare the few distinct values as text, then count their rows (no per-row str())
            unseen = [u for u in pd.unique(present) if str(u) not in prof.categories]
            out["unseen_category_rate"] = float(present.isin(unseen).mean()) if len(present) and unseen else 0.0
            out["unseen_categories"] = sorted(str(u) for u in unseen)[:_MAX_EXAMPLES]
        return out

    def summary(self, report: Mapping[str, Any]) -> dict[str, float]:
        """The worst rates of a :meth:`check` report (for alerts and dashboards)."""
        cols = report["columns"]
        return {
            "max_missing_rate": max((c["missing_rate"] for c in cols), default=0.0),
            "max_missing_rate_increase": max((c["missing_rate"] - c["reference_missing_rate"] for c in cols),
                                             default=0.0),
            "max_out_of_range_rate": max((c.get("out_of_range_rate", 0.0) for c in cols), default=0.0),
            "max_unseen_category_rate": max((c.get("unseen_category_rate", 0.0) for c in cols), default=0.0),
            "schema_violations": float(len(report["schema_violations"])),
        }


def feature_staleness(served: pd.DataFrame, events: Mapping[str, pd.DataFrame],
                      groups: Mapping[str, tuple[str, Sequence[str]]], *, time_column: str = "at") -> list[dict[str, Any]]:
    """Age of the newest event behind each feature at each served row's prediction time.

    Parameters
    ----------
    served
        One row per served prediction: ``time_column`` (tz-aware) and the key columns of the features.
    events
        Per source, its events' key columns and ``available_time``.
    groups
        Per feature name, ``(source, keys)``: the events it is computed from and how they are keyed.

    Returns
    -------
    list of dict
        Per feature: ``rows``, ``no_event_rate`` (rows whose keys had no event available yet) and the
        median, 95th percentile and maximum age in seconds of the rows that had one.
    """
    if time_column not in served.columns:
        raise SchemaError(f"feature_staleness: served rows need a {time_column!r} column; got {list(served.columns)}")
    out = []
    con = duckdb_connect()
    con.execute("SET TimeZone = 'UTC'")
    by_group: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for feature, (source, keys) in groups.items():
        by_group.setdefault((source, tuple(keys)), []).append(feature)
    for (source, keys), features in by_group.items():
        if source not in events:
            raise SchemaError(f"feature_staleness: no events given for source {source!r} (features {features})")
        ev = events[source]
        missing = [k for k in keys if k not in served.columns] + [k for k in (*keys, "available_time") if k not in ev.columns]
        if missing:
            raise SchemaError(f"feature_staleness: column(s) {missing} missing for source {source!r} "
                              f"(served has {list(served.columns)}, events have {list(ev.columns)})")
        left = served[[*keys, time_column]].copy()
        left["__row"] = np.arange(len(left))
        left["__t"] = pd.to_datetime(left[time_column], utc=True)
        right = ev[[*keys, "available_time"]].copy()
        right["available_time"] = pd.to_datetime(right["available_time"], utc=True)
        for k in keys:  # join on text so int/str spellings of a key agree
            left[k] = left[k].astype("string")
            right[k] = right[k].astype("string")
        con.register("l", left)
        con.register("r", right)
        on = " AND ".join(f'l."{k}" = r."{k}"' for k in keys)
        ages = con.execute(
            f'SELECT epoch(l."__t") - epoch(r.available_time) AS age FROM l ASOF LEFT JOIN r '
            f'ON {on} AND l."__t" >= r.available_time ORDER BY l."__row"').df()["age"].to_numpy(float)
        con.unregister("l")
        con.unregister("r")
        known = ages[~np.isnan(ages)]
        stats = {"rows": len(ages), "no_event_rate": float(np.isnan(ages).mean()) if len(ages) else 0.0,
                 "median_seconds": float(np.median(known)) if len(known) else None,
                 "p95_seconds": float(np.quantile(known, 0.95)) if len(known) else None,
                 "max_seconds": float(known.max()) if len(known) else None}
        for feature in features:
            out.append({"feature": feature, "source": source, "keys": list(keys), **stats})
    return sorted(out, key=lambda d: d["feature"])
