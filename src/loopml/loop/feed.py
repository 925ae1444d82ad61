"""The controller's view of the event log: a cursor per source that also sees events appended later.

:class:`LogFeed` is :class:`~loopml.events.Replayer` for a log that may grow while it is read.
:meth:`LogFeed.refresh` reads the events appended since the last read (event ids are dense and
increase with every append, so "new" is ``event_id >= next id``), and :meth:`LogFeed.advance_to`
hands out, per source, the buffered events that have become available by ``t``, in
(available_time, event_time, event_id) order. On replayed history the first refresh reads
everything and later ones find nothing new; live, each step reads what ingestion appended since.

An event appended after the feed has moved past its available time (late ingestion) is handed out
at the next ``advance_to`` and counted in :attr:`LogFeed.late`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime

from loopml.events.log import EventLog, arrow_table, duckdb_connect
from loopml.events.replay import EventBatch
from loopml.timeutil import to_us

__all__ = ["LogFeed"]


class LogFeed:
    """Per-source cursors over a growing event log (see module docstring).

    Parameters
    ----------
    log, sources, columns
        What to read (``columns`` per source; the system columns always come along).
    after
        Skip events available at or before this time (resuming from a state as of ``after``).
    bounds
        Per source, ``(start, end)``: keep only events with ``start <= available_time < end``.
    """

    def __init__(self, log: EventLog, sources: Sequence[str], *, columns: Mapping[str, Sequence[str]] | None = None,
                 after: datetime | None = None,
                 bounds: Mapping[str, tuple[datetime | None, datetime | None]] | None = None) -> None:
        self.log = log
        self.sources = list(sources)
        self.columns = {s: list((columns or {}).get(s, [])) or None for s in self.sources}
        self.after_us = to_us(after) if after is not None else None
        self.bounds = {s: (bounds or {}).get(s, (None, None)) for s in self.sources}
        self._next_id = dict.fromkeys(self.sources, 0)
        self._buf: dict[str, EventBatch] = {s: EventBatch({}, 0) for s in self.sources}
        self._pos = dict.fromkeys(self.sources, 0)
        self.clock_us: int | None = None
        self.late = 0

    def refresh(self) -> int:
        """Read events appended since the last refresh; return how many were buffered."""
        added = 0
        con = duckdb_connect()
        for s in self.sources:
            if s not in self.log.sources():
                continue
            relation = self.log.relation_sql(s)  # one fixed list of immutable segments: a consistent snapshot
            top = con.execute(f"SELECT max(event_id) FROM {relation}").fetchall()[0]
            if top is None or top[0] is None or top[0] < self._next_id[s]:
                continue
            cols = self.columns[s]
            select = "*" if cols is None else ", ".join(
                f'"{c}"' for c in dict.fromkeys(["event_id", "event_time", "available_time", *cols]))
            where, params = ["event_id >= ?", "event_id <= ?"], [self._next_id[s], int(top[0])]
            lo, hi = self.bounds[s]
            if lo is not None:
                where.append("available_time >= ?")
                params.append(lo)
            if hi is not None:
                where.append("available_time < ?")
                params.append(hi)
            if self.after_us is not None:
                where.append("epoch_us(available_time) > ?")
                params.append(self.after_us)
            table = arrow_table(con.sql(
                f"SELECT {select} FROM {relation} WHERE {' AND '.join(where)} "
                "ORDER BY available_time, event_time, event_id", params=params))
            self._next_id[s] = int(top[0]) + 1
            if table.num_rows == 0:
                continue
            new = EventBatch.from_table(table, cols)
            if self.clock_us is not None:
                self.late += sum(1 for t in new["available_time"] if t <= self.clock_us)
            self._merge(s, new)
            added += new.n
        return added

    def _merge(self, s: str, new: EventBatch) -> None:
        rest = self._buf[s].slice(self._pos[s], self._buf[s].n) if self._buf[s].n else None
        if rest is None or rest.n == 0:
            self._buf[s], self._pos[s] = new, 0
            return
        names = list(rest.columns)
        rows = sorted(zip(*(rest[c] + new[c] for c in names), strict=True),
                      key=lambda r: (r[names.index("available_time")], r[names.index("event_time")],
                                     r[names.index("event_id")]))
        self._buf[s] = EventBatch({c: [r[i] for r in rows] for i, c in enumerate(names)}, len(rows))
        self._pos[s] = 0

    def advance_to(self, t: datetime, *, sources: Sequence[str] | None = None) -> Iterator[tuple[str, EventBatch]]:
        """Yield (source, events) for buffered events available by ``t`` (inclusive) not yet handed out."""
        t_us = to_us(t)
        if self.clock_us is None or t_us > self.clock_us:
            self.clock_us = t_us
        for s in self.sources if sources is None else sources:
            batch, lo = self._buf[s], self._pos[s]
            if batch.n == lo:
                continue
            hi = bisect.bisect_right(batch["available_time"], t_us, lo)
            if hi > lo:
                self._pos[s] = hi
                yield s, batch.slice(lo, hi)

    def next_time_us(self, source: str) -> int | None:
        """Available time of the next buffered event of ``source`` (None if none is buffered)."""
        batch, pos = self._buf[source], self._pos[source]
        return batch["available_time"][pos] if pos < batch.n else None

    def peek_group(self, source: str) -> EventBatch | None:
        """The buffered events of ``source`` sharing the earliest available time (not consumed)."""
        batch, pos = self._buf[source], self._pos[source]
        if pos >= batch.n:
            return None
        t = batch["available_time"][pos]
        return batch.slice(pos, bisect.bisect_right(batch["available_time"], t, pos))

    def consume(self, source: str, n: int) -> None:
        self._pos[source] += n
