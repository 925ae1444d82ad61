"""Offline executor: point-in-time feature values for a spine of (keys, time) rows, in DuckDB SQL.

Windowed aggregates use a window function over the union of events and spine rows, partitioned by
the entity key and ordered by available time as integer microseconds, with the frame
``RANGE BETWEEN (window - 1us) PRECEDING AND CURRENT ROW`` -- exactly ``(t - window, t]``, with
events available at ``t`` itself included (``CURRENT ROW`` takes every peer). That is
O(n log n) with DuckDB's segment trees instead of the labels x history range join that makes
Feast's historical retrieval slow; count/sum/mean of integer-valued columns are differences of
running totals instead. Latest values use one ``ASOF LEFT JOIN`` per group of columns
(:mod:`.offline_latest`); last/last_k and the sketches run the online read code
(:mod:`.offline_extra`).

Label rows are never dropped or merged: every spine row comes back exactly once, in spine order,
duplicates included; rows without data get missing values (``count`` 0). With ``chunk`` the spine
is processed in time chunks so memory stays bounded; :meth:`OfflineExecutor.for_window` retrieves
every entity active in a time range without a spine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from loopml.errors import FeatureNotFound, InvalidConfig, SchemaError, closest
from loopml.events.log import EventLog, duckdb_connect
from loopml.features.definitions import Aggregate, Feature, Latest, RequestFeature
from loopml.features.offline_extra import EXTRA_AGGREGATIONS, extra_aggregates
from loopml.features.offline_latest import LatestLookup, latest_lookups
from loopml.timeutil import duration_us, to_us

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
    chunk
        Process the spine in time chunks of this length (None: all at once). Each chunk reads only
        the events its rows can see, and lookups carry a per-entity state (the latest row as of
        the chunk's start) from chunk to chunk, so memory is bounded by a chunk's events plus one
        row per entity, and the result equals the unchunked one exactly.
    """

    def __init__(self, log: EventLog, features: Sequence[Feature], *, threads: int | None = None,
                 chunk: timedelta | None = None) -> None:
        self.log = log
        self.features = list(features)
        self.threads = threads
        self.chunk = chunk

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb_connect()
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
        features use. Row count and order are preserved exactly: a row without data gets missing
        values (``count`` 0), and duplicate rows stay separate rows.
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
            for name, values in self._stored(spine, t_us, stored).items():
                out[name] = values
        requests = [f for f in chosen if isinstance(f, RequestFeature)]
        if requests:
            inputs = sorted({c for f in requests for c in f.inputs})
            rows = records(spine, inputs)
            for f in requests:
                values = [f.fn(r) for r in rows]
                out[f.name] = pd.array(values, dtype="float64" if f.dtype == "float" else "object")
        return out

    def for_window(self, start: datetime, end: datetime, *, every: timedelta | None = None,
                   features: Sequence[str] | None = None) -> pd.DataFrame:
        """Features of every entity active in ``(start, end]``, with no spine to supply.

        An entity (a value of the features' keys) is active if an event of any source the features
        read became available in ``(start, end]``. With ``every=None`` each active entity gets one
        row at ``end``; with ``every=step`` one row at each of ``start + step, start + 2 step, ...``
        up to and including ``end`` (entities that were active anywhere in the window, so a row can
        hold values from before the entity's first event: count 0, missing values). Feature values
        follow the usual semantics as of each row's ``prediction_time``. The chosen features must
        share one key set (one kind of entity); request features need a request and are refused.

        Returns the key columns, ``prediction_time`` (UTC) and one column per feature, ordered by
        (prediction_time, keys).
        """
        names = [f.name for f in self.features if not isinstance(f, RequestFeature)] if features is None else features
        chosen = self.select(names)
        requests = [f.name for f in chosen if isinstance(f, RequestFeature)]
        if requests:
            raise InvalidConfig(f"for_window cannot compute request features {requests}: they need a request's fields")
        key_sets = sorted({f.keys for f in chosen if not isinstance(f, RequestFeature)})
        if len(key_sets) != 1:
            raise InvalidConfig(f"for_window needs features of one key set (one kind of entity); got key sets "
                                f"{[list(k) for k in key_sets]}; pass features= of one of them")
        if every is not None and every <= timedelta(0):
            raise InvalidConfig(f"for_window every must be a positive duration; got {every!r}")
        if end <= start:
            raise InvalidConfig(f"for_window needs start < end; got start={start}, end={end}")
        keys = key_sets[0]
        kq = ", ".join(_q(k) for k in keys)
        not_null = " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
        lo, hi = to_us(start), to_us(end)
        sources = sorted({f.source for f in chosen if not isinstance(f, RequestFeature)})
        union = " UNION ".join(f"SELECT DISTINCT {kq} FROM {self.log.relation_sql(s)} WHERE {not_null} "
                               f"AND epoch_us(available_time) > {lo} AND epoch_us(available_time) <= {hi}"
                               for s in sources)
        con = self._connect()
        try:
            entities = con.execute(f"SELECT * FROM ({union}) ORDER BY ALL").df()
        finally:
            con.close()
        times = [hi] if every is None else list(range(lo + duration_us(every), hi + 1, duration_us(every)))
        grid = pd.DataFrame({"prediction_time": pd.to_datetime(np.array(times, dtype=np.int64), unit="us", utc=True)
                             .astype("datetime64[us, UTC]")})
        spine = grid.merge(entities, how="cross")[[*keys, "prediction_time"]]
        return self.join(spine, features=[f.name for f in chosen])

    def _stored(self, spine: pd.DataFrame, t_us: np.ndarray, stored: list[Feature]) -> dict[str, np.ndarray]:
        """Values of the stored features for every spine row, computed one time chunk at a time."""
        n = len(spine)
        key_cols = sorted({k for f in stored for k in f.keys})
        table = pa.table({"__rid": np.arange(n, dtype=np.int64), "__t": t_us,
                          **{k: _arrow(spine[k]) for k in key_cols}})
        values = {f.name: (np.full(n, np.nan) if f.dtype == "float" else np.full(n, None, dtype=object))
                  for f in stored}
        groups: dict[tuple[str, tuple[str, ...]], list[Feature]] = defaultdict(list)
        for f in stored:
            groups[(f.source, f.keys)].append(f)
        con = self._connect()
        try:
            units = {g: self._latest_units(con, g[0], g[1], [f for f in fs if isinstance(f, Latest)])
                     for g, fs in groups.items()}
            order = np.arange(n) if self.chunk is None else np.argsort(t_us, kind="stable")
            chunks = _chunks(t_us[order], self.chunk)
            for i, (a, b) in enumerate(chunks):
                rows = order[a:b]
                con.register("spine", table if len(chunks) == 1 else table.take(pa.array(rows)))
                lo, hi = int(t_us[rows].min()), int(t_us[rows].max())
                # events available in [start, end) are new to this chunk; older ones are in the state
                start = None if i == 0 else lo
                end = None if i == len(chunks) - 1 else int(t_us[order[b]])
                for (source, keys), feats in groups.items():
                    aggs = [f for f in feats if isinstance(f, Aggregate) and f.agg not in EXTRA_AGGREGATIONS]
                    extra = [f for f in feats if isinstance(f, Aggregate) and f.agg in EXTRA_AGGREGATIONS]
                    if extra:
                        got = extra_aggregates(con, self.log, source, keys, extra, spine.iloc[rows], t_us[rows])
                        for name, v in got.items():
                            values[name][rows] = v
                    for frame in self._aggregates(con, source, keys, aggs, lo, hi) if aggs else []:
                        rid = frame["__rid"].to_numpy()
                        for name in frame.columns.drop("__rid"):
                            values[name][rid] = frame[name].to_numpy()
                    for unit in units[(source, keys)]:
                        rid, got = unit.lookup(con, self.log.relation_sql(source), start, end, hi)
                        for name, v in got.items():
                            values[name][rid] = v
                con.unregister("spine")
        finally:
            con.close()
        return values

    def _aggregates(self, con: duckdb.DuckDBPyConnection, source: str, keys: tuple[str, ...],
                    feats: list[Aggregate], lo: int, hi: int) -> list[pd.DataFrame]:
        """Frames of ``__rid`` and feature columns (rows in no particular order) covering the spine."""
        cols = sorted({f.column for f in feats if f.column is not None})
        self._check_columns(source, [*keys, *cols], feats[0].name)
        exact = self._exactly_summable(con, source, cols, hi)
        fast = [f for f in feats if f.agg == "count" or (f.agg in ("sum", "mean") and f.column in exact)]
        slow = [f for f in feats if f not in fast]
        frames = [self._prefix_aggregates(con, source, keys, fast, lo, hi)] if fast else []
        if slow:
            frames.append(self._window_aggregates(con, source, keys, slow, lo, hi))
        return frames

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
                           feats: list[Aggregate], lo: int, hi: int) -> pd.DataFrame:
        """count/sum/mean over (t - w, t] as differences of running totals found by two ASOF joins.

        Exact because every summed column is integer-valued (checked by :meth:`_exactly_summable`),
        and far cheaper than range-framed window aggregates: one cumulative pass, then ASOF lookups.
        Totals start after ``lo - widest window``: every window of a spine row starts there or later.
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
                WHERE {not_null} AND epoch_us(available_time) > {lo - widths[-1]} AND epoch_us(available_time) <= {hi}
                GROUP BY ALL
            ), cum AS (
                SELECT {kq}, __ts, sum(n) OVER w AS n{running}
                FROM g WINDOW w AS (PARTITION BY {kq} ORDER BY __ts ROWS UNBOUNDED PRECEDING)
            )
            SELECT s.__rid, {", ".join(selects)}
            FROM spine s {" ".join(joins)}
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
        """
        frame = con.execute(sql).df()
        for f in feats:
            frame[f.name] = frame[f.name].astype("float64")
        return frame

    def _latest_units(self, con: duckdb.DuckDBPyConnection, source: str, keys: tuple[str, ...],
                      feats: list[Latest]) -> list[LatestLookup]:
        for f in feats:
            self._check_columns(source, [*keys, f.column], f.name)
        return latest_lookups(con, self.log.relation_sql(source), keys, feats) if feats else []

    def _check_columns(self, source: str, columns: Sequence[str], feature: str) -> None:
        names = self.log.schema(source).names
        for c in columns:
            if c not in names:
                raise SchemaError(
                    f"Feature {feature!r} reads column {c!r} of source {source!r}, which has no such column; "
                    f"it has {[n for n in names if n not in ('event_id', 'event_time', 'available_time')]}"
                )


def _chunks(sorted_t: np.ndarray, chunk: timedelta | None) -> list[tuple[int, int]]:
    """Index ranges of ``sorted_t`` falling in consecutive time chunks (equal times never split)."""
    n = len(sorted_t)
    if chunk is None or n == 0:
        return [(0, n)]
    width = duration_us(chunk)
    if width <= 0:
        raise InvalidConfig(f"OfflineExecutor chunk must be a positive duration; got {chunk!r}")
    first = int(sorted_t[0])
    edges = np.arange(first, int(sorted_t[-1]) + width, width, dtype=np.int64)
    cuts = np.unique(np.searchsorted(sorted_t, edges, side="left"))
    bounds = [int(c) for c in cuts if 0 < c < n]
    return [(a, b) for a, b in zip([0, *bounds], [*bounds, n], strict=True)]


def _arrow(column: pd.Series) -> pa.Array:
    """A spine key column as Arrow (missing -> null), without a round trip through Python objects."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    try:
        return pa.Array.from_pandas(column)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed object column: let Arrow infer from values
        return pa.array(column.astype(object).where(column.notna(), None).tolist())


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
