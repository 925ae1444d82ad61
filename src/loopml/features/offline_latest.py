"""Offline ``Latest`` lookups: one DuckDB ``ASOF LEFT JOIN`` per set of columns, with a state for chunking.

All ``Latest`` features of one (source, keys) group whose columns have no missing values share one
join (their "latest row" is the same row); a column with missing values gets its own join over its
non-missing rows, since a lookup skips missing values. Ties in available time go to the greatest
(event time, event id): when the events hold such ties the join key becomes that triple, which
costs a wider sort, so it is used only then.
"""

from __future__ import annotations

import itertools

import duckdb
import numpy as np

from loopml.features.definitions import Latest
from loopml.timeutil import duration_us

__all__ = ["LatestLookup", "latest_lookups"]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_IDS = itertools.count()
_MAX = 2**63 - 1


class LatestLookup:
    """``Latest`` features of one (source, keys) group that one ASOF join answers: they read ``columns``.

    A lookup matches each spine row to the latest event with ``available_time <= t`` whose
    ``columns`` are all present; ties in available time go to the greatest (event time, event id).
    When chunking, ``state`` holds per entity the latest such event before the current chunk.
    """

    def __init__(self, keys: tuple[str, ...], feats: list[Latest], columns: list[str], *, dense: bool) -> None:
        self.keys, self.feats, self.columns = keys, feats, columns
        self.dense = dense  # the columns have no missing values: no filter needed (nor read)
        self.state = f"__state_{next(_IDS)}"
        self.has_state = False

    def _events(self, relation: str, start: int | None, end: int | None, hi: int) -> str:
        kq = ", ".join(_q(k) for k in self.keys)
        cols = ", ".join(_q(c) for c in self.columns)
        where = [f"{_q(c)} IS NOT NULL" for c in [*self.keys, *([] if self.dense else self.columns)]]
        where.append(f"epoch_us(available_time) {'<' if end is not None else '<='} {hi if end is None else end}")
        if start is not None:
            where.append(f"epoch_us(available_time) >= {start}")
        sql = (f"SELECT {kq}, epoch_us(available_time) AS __ts, epoch_us(event_time) AS __et, event_id AS __id, "
               f"{cols} FROM {relation} WHERE {' AND '.join(where)}")
        if self.has_state:
            sql += f" UNION ALL SELECT {kq}, __ts, __et, __id, {cols} FROM {self.state}"
        return sql

    def lookup(self, con: duckdb.DuckDBPyConnection, relation: str, start: int | None, end: int | None,
               hi: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(spine row ids, values per feature) for the registered ``spine``; then advance the state to ``end``."""
        kq = ", ".join(_q(k) for k in self.keys)
        events = self._events(relation, start, end, hi)
        con.execute(f"CREATE OR REPLACE TEMP VIEW __e AS {events}")
        # Ties in (keys, available time) are rare; only then does the ASOF key need the tie-breakers,
        # which costs a wider sort. A hash collision only sends us down the (equally correct) slow path.
        ties = con.execute(f"SELECT count(*) - count(DISTINCT hash({kq}, __ts)) FROM __e").fetchall()[0][0]
        if ties:
            ek, sk = "{'a': e.__ts, 'b': e.__et, 'c': e.__id}", f"{{'a': s.__t, 'b': {_MAX}, 'c': {_MAX}}}"
        else:
            ek, sk = "e.__ts", "s.__t"
        on = " AND ".join(f"s.{_q(k)} = e.{_q(k)}" for k in self.keys)
        selects = []
        for f in self.feats:
            value = f"CAST(e.{_q(f.column)} AS {'DOUBLE' if f.dtype == 'float' else 'VARCHAR'})"
            if f.max_age is not None:
                value = f"CASE WHEN e.__et >= s.__t - {duration_us(f.max_age)} THEN {value} END"
            selects.append(f"{value} AS {_q(f.name)}")
        frame = con.execute(f"SELECT s.__rid, {', '.join(selects)} FROM spine s "
                            f"ASOF LEFT JOIN __e e ON {on} AND {sk} >= {ek}").df()
        got = {}
        for f in self.feats:
            v = frame[f.name]
            got[f.name] = (v.astype("float64").to_numpy() if f.dtype == "float"
                           else v.astype(object).where(v.notna(), None).to_numpy())
        if end is not None:
            fields = ", ".join(f"{_q(c)}: {_q(c)}" for c in ["__ts", "__et", "__id", *self.columns])
            picks = ", ".join(f"struct_extract(r, {_lit(c)}) AS {_q(c)}" for c in ["__ts", "__et", "__id", *self.columns])
            con.execute(f"CREATE OR REPLACE TEMP TABLE {self.state} AS SELECT {kq}, {picks} FROM ("
                        f"SELECT {kq}, arg_max({{{fields}}}, {{'a': __ts, 'b': __et, 'c': __id}}) AS r "
                        f"FROM __e GROUP BY ALL)")
            self.has_state = True
        return frame["__rid"].to_numpy(), got


def latest_lookups(con: duckdb.DuckDBPyConnection, relation: str, keys: tuple[str, ...],
                   feats: list[Latest]) -> list[LatestLookup]:
    """The lookups answering ``feats`` (one group): all columns without missing values, then one per other column."""
    cols = sorted({f.column for f in feats})
    # answered from Parquet statistics: no scan
    counts = con.execute(f"SELECT {', '.join(f'count(*) - count({_q(c)})' for c in cols)} FROM {relation}").fetchall()[0]
    dense = [c for c, nulls in zip(cols, counts, strict=True) if nulls == 0]
    units = [LatestLookup(keys, [f for f in feats if f.column in dense], dense, dense=True)] if dense else []
    return units + [LatestLookup(keys, [f for f in feats if f.column == c], [c], dense=False)
                    for c in cols if c not in dense]


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


