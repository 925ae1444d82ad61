"""Offline executor for the order-dependent and sketch aggregations: last, last_k, approx_*.

These stay out of the SQL in :mod:`loopml.features.offline` on purpose:

- ``last``/``last_k`` need the events of a window ordered by (available time, event time, event id),
  but a ``RANGE`` frame in DuckDB orders by one key only, so peers at the same available time come
  in an unspecified order, and ``last_value`` would pick one at random;
- DuckDB has no DataSketches extension (its ``approx_count_distinct``/``approx_quantile`` are its
  own HLL and t-digest, which the online executor could not reproduce).

So one DuckDB query reads each entity's events in log order, they are appended to the online
executor's own :class:`~loopml.features.online.GroupState`, and each spine row is answered by the
online executor's own read function: offline and online run literally the same code over the same
window, hence agree (exactly, but for KLL beyond ``kll_k`` values, see :mod:`.sketches`). The cost is
one binary search per spine row plus the window's values, so it suits the short-to-medium windows
that these aggregations are used with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from loopml.errors import SchemaError
from loopml.events.log import EventLog
from loopml.features.definitions import Aggregate
from loopml.features.online import GroupState, value_at
from loopml.timeutil import duration_us

__all__ = ["EXTRA_AGGREGATIONS", "extra_aggregates"]

EXTRA_AGGREGATIONS = frozenset({"last", "last_k", "approx_distinct", "approx_quantile"})


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def extra_aggregates(con: duckdb.DuckDBPyConnection, log: EventLog, source: str, keys: tuple[str, ...],
                     feats: Sequence[Aggregate], spine: pd.DataFrame, t_us: np.ndarray) -> dict[str, np.ndarray]:
    """Values of ``feats`` (aggregations in :data:`EXTRA_AGGREGATIONS`) for every spine row, in spine order.

    ``t_us`` holds each spine row's time as integer microseconds (UTC). Float aggregations come back
    as float64 arrays (NaN for missing), ``last_k`` as an object array of lists (None for missing).
    """
    names = log.schema(source).names
    floats = sorted({f.column for f in feats if f.column is not None and f.agg != "approx_distinct"})
    items = sorted({f.column for f in feats if f.column is not None and f.agg == "approx_distinct"})
    cols = sorted({*floats, *items})
    for f in feats:
        for c in [*keys, *([f.column] if f.column else [])]:
            if c not in names:
                raise SchemaError(
                    f"Feature {f.name!r} reads column {c!r} of source {source!r}, which has no such column; "
                    f"it has {[n for n in names if n not in ('event_id', 'event_time', 'available_time')]}")
    n = len(spine)
    out: dict[str, np.ndarray] = {
        f.name: np.full(n, None, dtype=object) if f.agg == "last_k" else np.full(n, np.nan) for f in feats}
    if n == 0:
        return out
    lo, hi = int(t_us.min()), int(t_us.max())
    widest = max(duration_us(f.window) for f in feats)
    kq = ", ".join(_q(k) for k in keys)
    not_null = " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
    rows = con.execute(
        f"SELECT {kq}, epoch_us(available_time){''.join(', ' + _q(c) for c in cols)} "
        f"FROM {log.relation_sql(source)} "
        f"WHERE {not_null} AND epoch_us(available_time) > {lo - widest} AND epoch_us(available_time) <= {hi} "
        f"ORDER BY available_time, event_time, event_id").fetchall()
    states: dict[tuple[Any, ...], GroupState] = {}
    nk = len(keys)
    for row in rows:
        key = tuple(row[:nk])
        st = states.get(key)
        if st is None:
            st = states[key] = GroupState()
            st.empty_like(floats, items)
        st.append(row[nk], zip(cols, row[nk + 1:], strict=True))
    spine_keys = list(zip(*(spine[k].astype(object).where(spine[k].notna(), None).tolist() for k in keys),
                          strict=True))
    for i, (key, t) in enumerate(zip(spine_keys, t_us.tolist(), strict=True)):
        st = None if None in key else states.get(key)
        for f in feats:
            v = value_at(f, st, t)
            if v is not None:
                out[f.name][i] = v
    return out
