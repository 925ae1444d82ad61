"""Walk event-log sources forward in available-time order."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from loopml.events.log import EventLog
from loopml.timeutil import to_us

__all__ = ["EventBatch", "Replayer"]


@dataclass(frozen=True)
class EventBatch:
    """Consecutive events of one source as Python lists; times are integer microseconds (UTC).

    The online executor's per-event loop reads plain lists: converting Arrow columns for every
    small batch would cost more than the updates themselves.
    """

    columns: Mapping[str, list[Any]]
    n: int

    @classmethod
    def from_table(cls, table: pa.Table, columns: Sequence[str] | None = None) -> EventBatch:
        names = table.column_names if columns is None else list(dict.fromkeys(
            ["event_id", "event_time", "available_time", *columns]))
        cols: dict[str, list[Any]] = {}
        for n in names:
            col = table.column(n)
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
            cols[n] = col.to_pylist()
        return cls(cols, table.num_rows)

    def slice(self, lo: int, hi: int) -> EventBatch:
        return EventBatch({k: v[lo:hi] for k, v in self.columns.items()}, hi - lo)

    def __getitem__(self, column: str) -> list[Any]:
        return self.columns[column]


class Replayer:
    """A cursor per source over the event log, advanced by a clock.

    ``advance_to(t)`` returns, per source, the events with ``available_time <= t`` not yet
    returned, in (available_time, event_time, event_id) order. Sources are independent streams, so
    per-source order is all the online state needs.

    ``after=T`` skips everything available at or before T, to resume from a materialised state.
    Each source (restricted to ``start``/``end`` and to ``columns``) is read once up front: at the
    scale of the embedded backend (a year of flights is ~1M events) that is a second of work.
    """

    def __init__(self, log: EventLog, sources: Sequence[str], *, start: datetime | None = None,
                 end: datetime | None = None, after: datetime | None = None,
                 columns: Mapping[str, Sequence[str]] | None = None) -> None:
        self.log = log
        self.sources = list(sources)
        self._batches: dict[str, EventBatch] = {}
        self._pos: dict[str, int] = {}
        for s in self.sources:
            wanted = None if columns is None or s not in columns else list(columns[s])
            table = log.read(s, start=after if after is not None else start, end=end, columns=wanted)
            batch = EventBatch.from_table(table, wanted)
            self._batches[s] = batch
            # `after`: resume strictly after a materialised state's time (events at it are already in)
            self._pos[s] = 0 if after is None else bisect.bisect_right(batch.columns["available_time"], to_us(after))
        self.clock_us: int | None = None

    def advance_to(self, t: datetime) -> Iterator[tuple[str, EventBatch]]:
        """Yield (source, new events) for everything that became available by ``t`` (inclusive)."""
        t_us = to_us(t)
        if self.clock_us is not None and t_us < self.clock_us:
            raise ValueError(f"the replay clock only moves forward: at {self.clock_us} us, asked for {t_us} us")
        self.clock_us = t_us
        for s in self.sources:
            batch, lo = self._batches[s], self._pos[s]
            hi = bisect.bisect_right(batch.columns["available_time"], t_us, lo)
            if hi > lo:
                self._pos[s] = hi
                yield s, batch.slice(lo, hi)

    def remaining(self, source: str) -> int:
        return self._batches[source].n - self._pos[source]
