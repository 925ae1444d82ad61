"""Offline executor: point-in-time feature values for a spine of (keys, time) rows, in DuckDB SQL.

Windowed aggregates use a window function over the union of events and spine rows, partitioned by
the entity key and ordered by available time as integer microseconds, with the frame
``RANGE BETWEEN (window - 1us) PRECEDING AND CURRENT ROW`` -- exactly ``(t - window, t]``, with
events available at ``t`` itself included (``CURRENT ROW`` takes every peer). That is
O(n log n) with DuckDB's segment trees instead of the labels x history range join that makes
Feast's historical retrieval slow. Latest values use ``ASOF LEFT JOIN``. Every spine row comes back
exactly once, in spine order; rows without data get missing values, never dropped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from loopml.errors import FeatureNotFound, SchemaError, closest
from loopml.events.log import EventLog
from loopml.features.definitions import Aggregate, Feature, Latest, RequestFeature
from loopml.timeutil import duration_us

__all__ = ["OfflineExecutor", "records"]

_AGG_SQL = {"count": "COUNT", "sum": "SUM", "mean": "AVG", "min": "MIN", "max": "MAX", "std": "STDDEV_SAMP"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class OfflineExecutor:
    """Compute features for a spine from the event log with DuckDB.

    Parameters
    ----------
    log
        The event log holding every source the features read.
    features
        The feature definitions.
    threads
        DuckDB threads (None: DuckDB's default, all cores).
    """

    def __init__(self, log: EventLog, features: Sequence[Feature], *, threads: int | None = None) -> None:
        self.log = log
        self.features = list(features)
        self.threads = threads

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        if self.threads:
            con.execute(f"SET threads = {int(self.threads)}")
        return con

    def select(self, names: Sequence[str] | None) -> list[Feature]:
        if names is None:
            return self.features
        by_name = {f.name: f for f in self.features}
        out = []
        for n in names:
            if n not in by_name:
                raise FeatureNotFound(
                    f"Feature {n!r} is not defined. Closest matches: {closest(n, by_name)}"
                )
            out.append(by_name[n])
        return out

    def join(self, spine: pd.DataFrame, *, time_column: str = "prediction_time",
             features: Sequence[str] | None = None) -> pd.DataFrame:
        """Return ``spine`` with one column per feature, valued as of each row's ``time_column``.

        ``spine`` needs ``time_column`` (UTC timestamps) and every key and request field the
        features use. Row count and order are preserved exactly.
        """
        chosen = self.select(features)
        if time_column not in spine.columns:
            raise SchemaError(f"spine has no column {time_column!r}; columns are {list(spine.columns)}")
        needed = sorted({k for f in chosen if not isinstance(f, RequestFeature) for k in f.keys}
                        | {k for f in chosen if isinstance(f, RequestFeature) for k in f.inputs})
        missing = [c for c in needed if c not in spine.columns]
        if missing:
            raise SchemaError(f"spine lacks column(s) {missing} that the features need; columns are {list(spine.columns)}")
        t = spine[time_column]
        if not isinstance(t.dtype, pd.DatetimeTZDtype):
            raise SchemaError(f"spine column {time_column!r} must be a UTC timestamp; got {t.dtype}")
        if t.isna().any():
            raise SchemaError(f"spine column {time_column!r} has missing times")
        out = spine.copy()
        t_us = t.astype("datetime64[us, UTC]").dt.tz_localize(None).to_numpy().astype("int64")
        stored = [f for f in chosen if not isinstance(f, RequestFeature)]
        if stored and len(spine):
            key_cols = sorted({k for f in stored for k in f.keys})
            sp = pa.table({"__rid": np.arange(len(spine), dtype=np.int64), "__t": t_us,
                           **{k: pa.array(spine[k].astype(object).where(spine[k].notna(), None).tolist())
                              for k in key_cols}})
            con = self._connect()
            con.register("spine", sp)
            lo, hi = int(t_us.min()), int(t_us.max())
            groups: dict[tuple[str, tuple[str, ...]], list[Feature]] = defaultdict(list)
            for f in stored:
                groups[(f.source, f.keys)].append(f)
            for (source, keys), feats in groups.items():
                aggs = [f for f in feats if isinstance(f, Aggregate)]
                latest = [f for f in feats if isinstance(f, Latest)]
                if aggs:
                    frame = self._aggregates(con, source, keys, aggs, lo, hi)
                    for f in aggs:
                        out[f.name] = frame[f.name].to_numpy()
                for f in latest:
                    out[f.name] = self._latest(con, source, keys, f, hi)
            con.close()
        requests = [f for f in chosen if isinstance(f, RequestFeature)]
        if requests:
            inputs = sorted({c for f in requests for c in f.inputs})
            rows = records(spine, inputs)
            for f in requests:
                values = [f.fn(r) for r in rows]
                out[f.name] = pd.array(values, dtype="float64" if f.dtype == "float" else "object")
        return out

    def _aggregates(self, con: duckdb.DuckDBPyConnection, source: str, keys: tuple[str, ...],
                    feats: list[Aggregate], lo: int, hi: int) -> pd.DataFrame:
        cols = sorted({f.column for f in feats if f.column is not None})
        self._check_columns(source, [*keys, *cols], feats[0].name)
        exact = self._exactly_summable(con, source, cols, hi)
        fast = [f for f in feats if f.agg == "count" or (f.agg in ("sum", "mean") and f.column in exact)]
        slow = [f for f in feats if f not in fast]
        frame = self._prefix_aggregates(con, source, keys, fast, hi) if fast else pd.DataFrame()
        if slow:
            other = self._window_aggregates(con, source, keys, slow, lo, hi)
            for f in slow:
                frame[f.name] = other[f.name].to_numpy()
        return frame

    def _exactly_summable(self, con: duckdb.DuckDBPyConnection, source: str, cols: list[str], hi: int) -> set[str]:
        """Columns whose values are all integers with |running sum| < 2**53: prefix sums of them are exact."""
        if not cols:
            return set()
        checks = ", ".join(f"coalesce(bool_and(CAST({_q(c)} AS DOUBLE) = round(CAST({_q(c)} AS DOUBLE))), true) "
                           f"AND coalesce(sum(abs(CAST({_q(c)} AS DOUBLE))), 0) < 9.0e15" for c in cols)
        row = con.execute(f"SELECT {checks} FROM {self.log.relation_sql(source)} "
                          f"WHERE epoch_us(available_time) <= {hi}").fetchall()[0]
        return {c for c, ok in zip(cols, row, strict=True) if ok}

    def _prefix_aggregates(self, con: duckdb.DuckDBPyConnection, source: str, keys: tuple[str, ...],
                           feats: list[Aggregate], hi: int) -> pd.DataFrame:
        """count/sum/mean over (t - w, t] as differences of running totals found by two ASOF joins.

        Exact because every summed column is integer-valued (checked by :meth:`_exactly_summable`),
        and far cheaper than range-framed window aggregates: one cumulative pass, then ASOF lookups.
        """
        cols = sorted({f.column for f in feats if f.column is not None})
        kq = ", ".join(_q(k) for k in keys)
        not_null = " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
        per_ts = "".join(f", sum(CAST({_q(c)} AS DOUBLE)) AS {_q('s_' + c)}, count({_q(c)}) AS {_q('c_' + c)}"
                         for c in cols)
        running = "".join(f", sum({_q('s_' + c)}) OVER w AS {_q('s_' + c)}, sum({_q('c_' + c)}) OVER w AS {_q('c_' + c)}"
                          for c in cols)
        widths = sorted({duration_us(f.window) for f in feats})
        joins, selects = [], []
        for i, us in enumerate(widths):
            on = " AND ".join(f"s.{_q(k)} = l{i}.{_q(k)}" for k in keys)
            joins.append(f"ASOF LEFT JOIN cum l{i} ON {on} AND s.__t - {us} >= l{i}.__ts")
        on = " AND ".join(f"s.{_q(k)} = h.{_q(k)}" for k in keys)
        joins.insert(0, f"ASOF LEFT JOIN cum h ON {on} AND s.__t >= h.__ts")
        for f in feats:
            i = widths.index(duration_us(f.window))
            def diff(col: str, i: int = i) -> str:
                return f"(coalesce(h.{_q(col)}, 0) - coalesce(l{i}.{_q(col)}, 0))"
            if f.column is None:
                expr = diff("n")
            elif f.agg == "count":
                expr = diff("c_" + f.column)
            elif f.agg == "sum":
                expr = f"CASE WHEN {diff('c_' + f.column)} > 0 THEN {diff('s_' + f.column)} END"
            else:
                expr = f"CASE WHEN {diff('c_' + f.column)} > 0 THEN {diff('s_' + f.column)} / {diff('c_' + f.column)} END"
            selects.append(f"CAST({expr} AS DOUBLE) AS {_q(f.name)}")
        sql = f"""
            WITH g AS (
                SELECT {kq}, epoch_us(available_time) AS __ts, count(*) AS n{per_ts}
                FROM {self.log.relation_sql(source)}
                WHERE {not_null} AND epoch_us(available_time) <= {hi}
                GROUP BY ALL
            ), cum AS (
                SELECT {kq}, __ts, sum(n) OVER w AS n{running}
                FROM g WINDOW w AS (PARTITION BY {kq} ORDER BY __ts ROWS UNBOUNDED PRECEDING)
            )
            SELECT s.__rid, {", ".join(selects)}
            FROM spine s {" ".join(joins)}
            ORDER BY s.__rid
        """
        frame = con.execute(sql).df()
        for f in feats:
            frame[f.name] = frame[f.name].astype("float64")
        return frame

    def _window_aggregates(self, con: duckdb.DuckDBPyConnection, source: str, keys: tuple[str, ...],
                           feats: list[Aggregate], lo: int, hi: int) -> pd.DataFrame:
        """Any aggregate over (t - w, t] with a range-framed window function over events and spine rows."""
        cols = sorted({f.column for f in feats if f.column is not None})
        widest = max(duration_us(f.window) for f in feats)
        kq = ", ".join(_q(k) for k in keys)
        not_null = " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
        ev_cols = "".join(f", CAST({_q(c)} AS DOUBLE) AS {_q('v_' + c)}" for c in cols)
        sp_cols = "".join(f", NULL::DOUBLE AS {_q('v_' + c)}" for c in cols)
        windows, exprs = {}, []
        for f in feats:
            us = duration_us(f.window)
            w = windows.setdefault(us, f"w{len(windows)}")
            arg = "__one" if f.column is None else _q("v_" + f.column)
            exprs.append(f"{_AGG_SQL[f.agg]}({arg}) OVER {w} AS {_q(f.name)}")
        window_sql = ", ".join(
            f"{name} AS (PARTITION BY {kq} ORDER BY __ts RANGE BETWEEN {us - 1} PRECEDING AND CURRENT ROW)"
            for us, name in windows.items())
        sql = f"""
            WITH ev AS (
                SELECT {kq}, epoch_us(available_time) AS __ts, 1 AS __one, NULL::BIGINT AS __rid{ev_cols}
                FROM {self.log.relation_sql(source)}
                WHERE {not_null} AND epoch_us(available_time) > {lo - widest} AND epoch_us(available_time) <= {hi}
            ), sp AS (
                SELECT {kq}, __t AS __ts, NULL::INTEGER AS __one, __rid{sp_cols} FROM spine
            ), u AS (SELECT * FROM ev UNION ALL SELECT * FROM sp)
            SELECT __rid, {", ".join(exprs)}
            FROM u
            WINDOW {window_sql}
            QUALIFY __rid IS NOT NULL
            ORDER BY __rid
        """
        frame = con.execute(sql).df()
        for f in feats:
            frame[f.name] = frame[f.name].astype("float64")
        return frame

    def _latest(self, con: duckdb.DuckDBPyConnection, source: str, keys: tuple[str, ...], f: Latest,
                hi: int) -> np.ndarray:
        self._check_columns(source, [*keys, f.column], f.name)
        kq = ", ".join(_q(k) for k in keys)
        not_null = " AND ".join(f"{_q(k)} IS NOT NULL" for k in [*keys, f.column])
        on = " AND ".join(f"s.{_q(k)} = e.{_q(k)}" for k in keys)
        value = f"CAST(e.{_q(f.column)} AS {'DOUBLE' if f.dtype == 'float' else 'VARCHAR'})"
        if f.max_age is not None:
            age = duration_us(f.max_age)
            value = f"CASE WHEN e.__et >= s.__t - {age} THEN {value} END"
        sql = f"""
            WITH e AS (
                SELECT {kq}, epoch_us(available_time) AS __ts, epoch_us(event_time) AS __et, {_q(f.column)}
                FROM {self.log.relation_sql(source)}
                WHERE {not_null} AND epoch_us(available_time) <= {hi}
                QUALIFY row_number() OVER (PARTITION BY {kq}, available_time ORDER BY event_time DESC, event_id DESC) = 1
            )
            SELECT s.__rid, {value} AS v
            FROM spine s ASOF LEFT JOIN e ON {on} AND s.__t >= e.__ts
            ORDER BY s.__rid
        """
        v = con.execute(sql).df()["v"]
        return v.astype("float64").to_numpy() if f.dtype == "float" else v.astype(object).where(v.notna(), None).to_numpy()

    def _check_columns(self, source: str, columns: Sequence[str], feature: str) -> None:
        names = self.log.schema(source).names
        for c in columns:
            if c not in names:
                raise SchemaError(
                    f"Feature {feature!r} reads column {c!r} of source {source!r}, which has no such column; "
                    f"it has {[n for n in names if n not in ('event_id', 'event_time', 'available_time')]}"
                )


def records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as dicts of plain Python values (datetimes as aware ``datetime``), as a live request has."""
    cols = []
    for c in columns:
        s = frame[c]
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            values = list(s.dt.to_pydatetime())
        else:
            values = s.astype(object).where(s.notna(), None).tolist()
        cols.append(values)
    return [dict(zip(columns, vals, strict=True)) for vals in zip(*cols, strict=True)]
