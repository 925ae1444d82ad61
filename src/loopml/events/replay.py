"""Walk event-log sources forward in available-time order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa

from loopml.events.log import EventLog
from loopml.timeutil import to_us

__all__ = ["Replayer"]


class Replayer:
    """A cursor per source over the event log, advanced by a clock.

    ``advance_to(t)`` returns, per source, the events with ``available_time <= t`` not yet
    returned, in (available_time, event_time, event_id) order. Sources are independent streams, so
    per-source order is all the online state needs.

    The whole of each source (restricted to ``start``/``end``) is read once up front: at the scale
    of the embedded backend (a year of flights is ~1M events) that is a second of DuckDB work.
    """

    def __init__(self, log: EventLog, sources: Sequence[str], *, start: datetime | None = None,
                 end: datetime | None = None) -> None:
        self.log = log
        self.sources = list(sources)
        self._tables: dict[str, pa.Table] = {}
        self._avail: dict[str, np.ndarray] = {}
        self._pos: dict[str, int] = {}
        for s in self.sources:
            table = log.read(s, start=start, end=end)
            self._tables[s] = table
            self._avail[s] = _as_us(table.column("available_time"))
            self._pos[s] = 0
        self.clock_us: int | None = None

    def advance_to(self, t: datetime) -> Iterator[tuple[str, pa.Table]]:
        """Yield (source, new events) for everything that became available by ``t`` (inclusive)."""
        t_us = to_us(t)
        if self.clock_us is not None and t_us < self.clock_us:
            raise ValueError(f"the replay clock only moves forward: at {self.clock_us} us, asked for {t_us} us")
        self.clock_us = t_us
        for s in self.sources:
            lo = self._pos[s]
            hi = int(np.searchsorted(self._avail[s], t_us, side="right"))
            if hi > lo:
                self._pos[s] = hi
                yield s, self._tables[s].slice(lo, hi - lo)

    def remaining(self, source: str) -> int:
        return len(self._avail[source]) - self._pos[source]


def _as_us(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
