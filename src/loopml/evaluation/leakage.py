"""Leakage checks: features that know the answer, and test sets that overlap the training set.

A feature that on its own separates the label almost perfectly is more often a leak than a
discovery: a column filled in after the fact (the arrival delay itself), an id that stands for one
row, a timestamp that encodes the outcome. :func:`single_feature_auc` scores every feature alone by
ROC AUC (``max(auc, 1 - auc)``, so inverted features count too) and flags those at or above a
threshold. A categorical feature is scored by its target rate, *fitted out of fold*: a row's score
is its category's label rate in the other folds, so an id with one row per value scores the prior
(AUC 0.5) instead of its own label (AUC 1).

:func:`leakage_report` adds the split checks: training and test windows that overlap in time, and
test entities (flight ids, say) already seen in training. :func:`availability_violations` checks
the feature declarations against the event log: a request feature must read only what a live
request carries, and no stored fact may be available before it happened.

Every check returns *findings*, dicts ``{"kind", "what", "value", "threshold", "message"}`` whose
message says what is wrong and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopml.errors import FeatureNotFound, InvalidConfig, SchemaError, closest
from loopml.evaluation.slices import _auc as _rank_auc
from loopml.events.log import duckdb_connect
from loopml.features.definitions import Feature, RequestFeature, Spine
from loopml.timeutil import parse_time

if TYPE_CHECKING:
    from loopml.events import EventLog

__all__ = ["availability_violations", "leakage_report", "single_feature_auc"]

Window = tuple[str | datetime | pd.Timestamp, str | datetime | pd.Timestamp]


def single_feature_auc(
    frame: pd.DataFrame,
    y: Any,
    features: Sequence[str],
    *,
    threshold: float = 0.9,
    categorical: Sequence[str] = (),
    n_folds: int = 5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """ROC AUC of each feature used alone as a score, flagging suspiciously strong ones.

    Parameters
    ----------
    frame
        The rows, one column per feature.
    y
        Binary labels 0/1, aligned with ``frame`` by position.
    features
        Columns to score. Numeric columns are scores as they are; columns named in ``categorical``
        are scored by out-of-fold target rate (see the module docstring).
    threshold
        A feature whose AUC is at or above it is ``suspicious``.
    categorical
        Names of categorical features. A non-numeric feature must be listed here.
    n_folds, seed
        Folds of the target-rate encoding and the seed that assigns rows to them.

    Returns
    -------
    list of dict
        ``{"feature", "auc", "coverage", "suspicious"}`` per feature, highest AUC first (NaN last).
        ``auc`` is ``max(auc, 1 - auc)`` on the rows where the feature is present, NaN when those
        rows hold a single class; ``coverage`` is the share of rows where it is present.

    Examples
    --------
    >>> frame = pd.DataFrame({"delay": [0, 5, 20, 40, 3, 30], "hour": [8, 9, 8, 9, 9, 8]})
    >>> y = [0, 0, 1, 1, 0, 1]
    >>> [(r["feature"], r["auc"], r["suspicious"]) for r in single_feature_auc(frame, y, ["delay", "hour"])]
    [('delay', 1.0, True), ('hour', 0.6666666666666666, False)]
    """
    y = _labels(y, len(frame))
    _check_rate("threshold", threshold, low=0.5)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise InvalidConfig(f"n_folds must be an integer of at least 2; got {n_folds!r}.")
    _require_columns(frame, features, "frame")
    cats = set(categorical)
    fold = np.random.default_rng(seed).permutation(len(y)) % n_folds
    out = []
    for name in features:
        col = frame[name]
        if name in cats:
            score = _out_of_fold_rate(col, y, fold, n_folds)
        else:
            score = _numeric(col, name)
        ok = ~np.isnan(score)
        auc = _auc(y[ok], score[ok])
        out.append({"feature": name, "auc": auc, "coverage": float(ok.mean()) if len(ok) else float("nan"),
                    "suspicious": bool(auc >= threshold)})
    return sorted(out, key=lambda r: -r["auc"] if not np.isnan(r["auc"]) else np.inf)


def leakage_report(
    frame: pd.DataFrame,
    y: Any,
    features: Sequence[str],
    *,
    train_window: Window,
    test_window: Window,
    frame_test: pd.DataFrame | None = None,
    entity_column: str | None = None,
    max_entity_overlap: float = 0.0,
    threshold: float = 0.9,
    categorical: Sequence[str] = (),
    n_folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Single-feature AUC, time overlap of the windows and entity overlap of the splits, as findings.

    Parameters
    ----------
    frame, y, features, threshold, categorical, n_folds, seed
        The training rows and labels, scored by :func:`single_feature_auc`.
    train_window, test_window
        ``(start, end)`` of each split, half-open ``[start, end)``; datetimes or ISO-8601 strings
        (naive values are UTC). Windows that share time are a finding, and so is a test window that
        ends before the training window starts (the model would be scored on the past).
    frame_test, entity_column
        Given together: the share of distinct test entities (non-missing values of
        ``entity_column``) that also occur in ``frame`` is reported as ``entity_overlap``.
    max_entity_overlap
        That share above this is a finding. The default 0 suits a row-level id (a flight id); an
        entity that legitimately recurs (a tail number) needs a higher allowance.

    Returns
    -------
    dict
        ``{"findings", "single_feature_auc", "entity_overlap", "passed"}``; ``passed`` is true when
        there are no findings. Window findings carry the overlap or gap in seconds as ``value``.

    Examples
    --------
    >>> frame = pd.DataFrame({"hour": [8, 9, 8, 9]})
    >>> report = leakage_report(frame, [0, 1, 1, 0], ["hour"], train_window=("2013-01-01", "2013-07-01"),
    ...                         test_window=("2013-06-01", "2013-08-01"))
    >>> [(f["kind"], f["value"] / 86400) for f in report["findings"]], report["passed"]
    ([('window_overlap', 30.0)], False)
    """
    _check_rate("max_entity_overlap", max_entity_overlap)
    aucs = single_feature_auc(frame, y, features, threshold=threshold, categorical=categorical,
                              n_folds=n_folds, seed=seed)
    findings = [
        _finding("single_feature_auc", r["feature"], r["auc"], threshold,
                 f"Feature {r['feature']!r} alone separates the label with AUC {r['auc']:.3f} (threshold "
                 f"{threshold}); check that it is known at prediction time and not computed from the label "
                 "or from what happened after the prediction, and drop it if it is not.")
        for r in aucs if r["suspicious"]
    ]
    findings += _window_findings(train_window, test_window)
    overlap = None
    if (frame_test is None) != (entity_column is None):
        raise InvalidConfig(
            "frame_test and entity_column go together (the entity overlap needs both); got "
            f"frame_test={'a frame' if frame_test is not None else None}, entity_column={entity_column!r}."
        )
    if frame_test is not None and entity_column is not None:
        _require_columns(frame, [entity_column], "frame")
        _require_columns(frame_test, [entity_column], "frame_test")
        test_ids = pd.unique(frame_test[entity_column].dropna())
        seen = np.isin(test_ids, pd.unique(frame[entity_column].dropna()))
        overlap = float(seen.mean()) if len(test_ids) else 0.0
        if overlap > max_entity_overlap:
            findings.append(_finding(
                "entity_overlap", entity_column, overlap, max_entity_overlap,
                f"{overlap:.1%} of the test entities in {entity_column!r} "
                f"({int(seen.sum())} of {len(test_ids)}) also occur in the training rows (allowed "
                f"{max_entity_overlap:.1%}); split by entity so the model is scored on entities it has not "
                "memorised, or raise max_entity_overlap if these entities recur in production too."))
    return {"findings": findings, "single_feature_auc": aucs, "entity_overlap": overlap,
            "passed": not findings}


def availability_violations(log: EventLog, features: Sequence[Feature], spine: Spine) -> list[dict[str, Any]]:
    """Declared-availability checks of feature definitions against the event log.

    Four kinds of finding, each pointing at one feature:

    - ``request_input``: a :class:`~loopml.features.definitions.RequestFeature` reads fields that are
      not among ``spine.request_fields``, so offline it sees data a live request does not carry.
    - ``missing_source`` / ``missing_column``: a stored feature reads a source the log lacks, or a
      key or column that source lacks.
    - ``available_before_event``: the feature's source holds rows whose ``available_time`` precedes
      their ``event_time`` (impossible facts: :meth:`EventLog.append` rejects them, but segments
      written by other tools are not checked on the way in); ``value`` counts them.

    The point-in-time join is trusted to honour ``available_time``; what this checks is that the
    times it is given can be true. Returns the findings, empty when there are none.
    """

    fields = list(spine.request_fields)
    sources = set(log.sources())
    bad_rows: dict[str, int] = {}
    findings: list[dict[str, Any]] = []
    for f in features:
        if isinstance(f, RequestFeature):
            missing = [i for i in f.inputs if i not in fields]
            if missing:
                findings.append(_finding(
                    "request_input", f.name, missing, None,
                    f"RequestFeature {f.name!r} reads {missing}, which a live request does not carry "
                    f"(request_fields are {fields}); compute it from a stored source instead, or add the "
                    "field to the spine's request_fields if it truly is known when the request is made."))
            continue
        if f.source not in sources:
            findings.append(_finding(
                "missing_source", f.name, f.source, None,
                f"Feature {f.name!r} reads source {f.source!r}, which is not in the event log (it has "
                f"{sorted(sources)}); ingest the source or fix the feature's source name."))
            continue
        names = set(log.schema(f.source).names)
        wanted = [*f.keys, *([f.column] if f.column is not None else [])]
        absent = [c for c in wanted if c not in names]
        if absent:
            findings.append(_finding(
                "missing_column", f.name, absent, None,
                f"Feature {f.name!r} reads column(s) {absent} that source {f.source!r} lacks; its columns "
                f"are {sorted(names)}."))
        if f.source not in bad_rows:
            sql = f"SELECT count(*) FROM {log.relation_sql(f.source)} WHERE available_time < event_time"
            bad_rows[f.source] = int(duckdb_connect().sql(sql).fetchall()[0][0])
        if bad_rows[f.source]:
            findings.append(_finding(
                "available_before_event", f.name, bad_rows[f.source], 0,
                f"Source {f.source!r} of feature {f.name!r} has {bad_rows[f.source]} row(s) whose "
                "available_time precedes their event_time; such a row lets the feature see a fact before "
                "it happened. Fix the ingestion that set available_time (it is at least event_time)."))
    return findings


# -- helpers ---------------------------------------------------------------------------------------
def _finding(kind: str, what: Any, value: Any, threshold: Any, message: str) -> dict[str, Any]:
    return {"kind": kind, "what": what, "value": value, "threshold": threshold, "message": message}


def _labels(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or len(y) != n:
        raise SchemaError(f"y must be one label per row of frame ({n}); got shape {y.shape}.")
    bad = np.flatnonzero((y != 0) & (y != 1))
    if len(bad):
        raise SchemaError(f"y must hold binary labels 0/1; got {y[bad[0]].item()!r} at row {bad[0]}.")
    return y


def _check_rate(name: str, value: Any, *, low: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not low <= value <= 1:
        raise InvalidConfig(f"{name} must be a number from {low:g} to 1; got {value!r}.")


def _require_columns(frame: pd.DataFrame, names: Sequence[str], what: str) -> None:
    if isinstance(names, str):
        raise InvalidConfig(f"features must be a list of column names; got the string {names!r}.")
    for name in names:
        if name not in frame.columns:
            hint = closest(str(name), map(str, frame.columns))
            extra = f" Closest matches: {hint}." if hint else ""
            raise FeatureNotFound(f"{what} has no column {name!r}.{extra}")


def _numeric(col: pd.Series, name: str) -> np.ndarray:
    if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
        example = col.dropna().iloc[0] if col.notna().any() else None
        raise SchemaError(
            f"Feature {name!r} is not numeric (dtype {col.dtype}, e.g. {example!r}); list it in "
            "categorical=[...] to score it by its out-of-fold target rate."
        )
    return col.astype("float64").to_numpy(na_value=np.nan)


def _out_of_fold_rate(col: pd.Series, y: np.ndarray, fold: np.ndarray, n_folds: int) -> np.ndarray:
    """Each row's category rate in the other folds; the overall rate for categories unseen there."""
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    ok = codes >= 0
    score = np.full(len(y), np.nan)
    if not ok.any():
        return score
    k = len(uniques)
    total = np.bincount(codes[ok], weights=y[ok], minlength=k)
    count = np.bincount(codes[ok], minlength=k)
    prior = y[ok].mean()  # one constant for every unseen row: it ranks them together, it leaks nothing
    for j in range(n_folds):
        rows = ok & (fold == j)
        s = total - np.bincount(codes[rows], weights=y[rows], minlength=k)
        c = count - np.bincount(codes[rows], minlength=k)
        rate = np.where(c > 0, s / np.maximum(c, 1), prior)
        score[rows] = rate[codes[rows]]
    return score


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    auc = _rank_auc(y, score)  # scikit-learn's roc_auc_score to 1e-12, from one sort instead of its curve
    return max(auc, 1.0 - auc)


def _window(value: Any, name: str) -> tuple[datetime, datetime]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InvalidConfig(f"{name} must be a (start, end) pair; got {value!r}.")
    start, end = parse_time(value[0], field=f"{name}[0]"), parse_time(value[1], field=f"{name}[1]")
    if not start < end:
        raise InvalidConfig(f"{name} must start before it ends; got start {start} and end {end}.")
    return start, end


def _window_findings(train_window: Any, test_window: Any) -> list[dict[str, Any]]:
    (a0, a1), (b0, b1) = _window(train_window, "train_window"), _window(test_window, "test_window")
    shared = (min(a1, b1) - max(a0, b0)).total_seconds()
    if shared > 0:
        return [_finding(
            "window_overlap", "train_window/test_window", shared, 0.0,
            f"The training window [{a0}, {a1}) and the test window [{b0}, {b1}) share "
            f"{shared / 86400:g} day(s); rows from the same period on both sides inflate the test score. "
            "End training before the test window starts (leave a gap of the label delay).")]
    if b1 <= a0:
        return [_finding(
            "window_order", "train_window/test_window", (a0 - b1).total_seconds(), 0.0,
            f"The test window [{b0}, {b1}) ends before the training window [{a0}, {a1}) starts; the "
            "model is scored on the past it was not trained for. Test on a window after training.")]
    return []
