"""Parquet-segment event log read with DuckDB."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loopml.errors import EventLogError, SchemaError
from loopml.timeutil import utc_series

__all__ = ["SYSTEM_COLUMNS", "EventLog", "duckdb_connect"]

SYSTEM_COLUMNS = ("event_id", "event_time", "available_time")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def duckdb_connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection for loopml's queries, with DuckDB's progress bar off.

    DuckDB draws the bar on stdout for queries longer than about two seconds, which would corrupt
    the JSON that ``--json`` commands print there.
    """
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    return con


class EventLog:
    """Append-only event log stored as Parquet segments under ``root``.

    Parameters
    ----------
    root
        Folder holding one sub-folder per source.

    Examples
    --------
    >>> log = EventLog(tmp_path)                                        # doctest: +SKIP
    >>> log.append("weather", df, event_time="time_hour", available_time="time_hour")  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- writing -----------------------------------------------------------------------------
    def append(
        self,
        source: str,
        frame: pd.DataFrame,
        *,
        event_time: str = "event_time",
        available_time: str = "available_time",
    ) -> int:
        """Append ``frame`` to ``source`` as one new immutable segment; return the rows written.

        ``event_time`` and ``available_time`` name the frame's columns that hold those times.
        A row whose available time precedes its event time is rejected: a fact cannot be known
        before it happens. The segment is written to a temporary file and renamed into place, so
        a crash never leaves a half-written segment visible.
        """
        if not _NAME.match(source):
            raise EventLogError(f"source name must be an identifier like 'departures'; got {source!r}")
        for role, column in (("event_time", event_time), ("available_time", available_time)):
            if column not in frame.columns:
                raise SchemaError(
                    f"Source {source!r} has no column {column!r} for its {role}; "
                    f"columns are {sorted(map(str, frame.columns))}"
                )
        if len(frame) == 0:
            return 0
        out = frame.drop(columns=[c for c in SYSTEM_COLUMNS if c in frame.columns and c not in
                                  (event_time, available_time)])
        et = utc_series(frame[event_time], field=f"{source}.{event_time}")
        at = utc_series(frame[available_time], field=f"{source}.{available_time}")
        if et.isna().any() or at.isna().any():
            column = event_time if et.isna().any() else available_time
            raise SchemaError(f"Column {column!r} of source {source!r} has missing timestamps; every event needs both times")
        early = at < et
        if early.any():
            i = int(early.to_numpy().nonzero()[0][0])
            raise SchemaError(
                f"Source {source!r}: available_time {at.iloc[i]} precedes event_time {et.iloc[i]} "
                f"(row {i}); a fact cannot be known before it happens"
            )
        out = out.drop(columns=[c for c in (event_time, available_time) if c in out.columns and c not in SYSTEM_COLUMNS])
        out["event_time"] = et.to_numpy()
        out["available_time"] = at.to_numpy()
        start = self._next_id(source)
        out["event_id"] = pd.RangeIndex(start, start + len(out)).to_numpy(dtype="int64")
        out = out[["event_id", "event_time", "available_time", *[c for c in out.columns if c not in SYSTEM_COLUMNS]]]
        folder = self.root / source
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(out, preserve_index=False)
        existing = self.schema(source) if self.sources() and source in self.sources() else None
        if existing is not None and not _compatible(existing, table.schema):
            raise SchemaError(
                f"Segment for source {source!r} does not match its existing schema:\n"
                f"existing {existing}\nnew      {table.schema}"
            )
        name = folder / f"seg-{start:012d}.parquet"
        tmp = folder / f".{name.name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, name)
        return len(out)

    def _next_id(self, source: str) -> int:
        segments = self._segments(source)
        if not segments:
            return 0
        last = pq.ParquetFile(segments[-1])
        start = int(segments[-1].stem.split("-")[1])
        return start + last.metadata.num_rows

    # -- reading -----------------------------------------------------------------------------
    def sources(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self._segments(p.name))

    def _segments(self, source: str) -> list[Path]:
        return sorted((self.root / source).glob("seg-*.parquet"))

    def schema(self, source: str) -> pa.Schema:
        segments = self._segments(source)
        if not segments:
            raise EventLogError(f"source {source!r} is not in the event log at {self.root}; it has {self.sources()}")
        return pq.read_schema(segments[0])

    def relation_sql(self, source: str) -> str:
        """A DuckDB table expression reading every segment of ``source``."""
        segments = self._segments(source)
        if not segments:
            raise EventLogError(f"source {source!r} is not in the event log at {self.root}; it has {self.sources()}")
        files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in segments)
        return f"read_parquet([{files}])"

    def read(
        self,
        source: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        by: str = "available_time",
        columns: Sequence[str] | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> pa.Table:
        """Rows of ``source`` with ``start <= by < end``, ordered by (by, event_time, event_id)."""
        if by not in ("available_time", "event_time"):
            raise ValueError(f"'by' must be 'available_time' or 'event_time'; got {by!r}")
        cols = "*" if columns is None else ", ".join(_quote(c) for c in dict.fromkeys(["event_id", "event_time", "available_time", *columns]))
        where, params = [], []
        if start is not None:
            where.append(f"{by} >= ?")
            params.append(start)
        if end is not None:
            where.append(f"{by} < ?")
            params.append(end)
        sql = f"SELECT {cols} FROM {self.relation_sql(source)}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        other = "event_time" if by == "available_time" else "available_time"
        sql += f" ORDER BY {by}, {other}, event_id"
        con = con or duckdb_connect()
        return arrow_table(con.sql(sql, params=params))

    def count(self, source: str) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self._segments(source))


def arrow_table(result: duckdb.DuckDBPyConnection) -> pa.Table:
    """A DuckDB result as an Arrow table (``to_arrow_table`` in DuckDB 2, ``fetch_arrow_table`` before)."""
    fetch = getattr(result, "to_arrow_table", None) or result.fetch_arrow_table
    return fetch()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _compatible(a: pa.Schema, b: pa.Schema) -> bool:
    if set(a.names) != set(b.names):
        return False
    for field in a:
        other = b.field(field.name)
        if field.type != other.type and not (pa.types.is_null(other.type) or pa.types.is_null(field.type)):
            # ints and floats mix (a column whose nulls made pandas pick float); DuckDB unifies them
            numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
            numeric_other = pa.types.is_integer(other.type) or pa.types.is_floating(other.type)
            if not (numeric and numeric_other):
                return False
    return True
