"""Live ingestion in step with a clock: append each event to the event log once it has become available.

:class:`LiveSource` holds upstream events (for the flights example, the project's source files) and,
each time the controller steps, appends to the event log those whose available time has passed --
what a live feed would have delivered by then. Events are appended in (available_time, event_time,
upstream order), so the log's order for equal times is the upstream's, as a one-shot ingest gives.
Progress is the log itself: what a source holds is a prefix of its upstream in that order, so a
restarted process continues where the log ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from loopml.errors import SchemaError
from loopml.events.log import EventLog
from loopml.monitoring.quality import DataQuality
from loopml.timeutil import from_us, to_us, utc_series

__all__ = ["LiveSource"]


class LiveSource:
    """Upstream events, appended to ``log`` as a clock passes their available times.

    Parameters
    ----------
    log
        The event log to append to.
    frames
        Per source, its events with ``event_time`` and ``available_time`` columns.
    check_quality
        Check every appended batch against its source's first batch (the history before the run):
        missing rates, out-of-range values, unseen categories, schema violations
        (:class:`~loopml.monitoring.quality.DataQuality`). Per source, the latest check's summary is
        in :attr:`quality` and every batch with a finding is in :attr:`findings`.
    """

    def __init__(self, log: EventLog, frames: Mapping[str, pd.DataFrame], *, check_quality: bool = False) -> None:
        self.log = log
        self.check_quality = check_quality
        self._profiles: dict[str, DataQuality] = {}
        self.quality: dict[str, dict[str, Any]] = {}
        self.findings: list[dict[str, Any]] = []
        self._frames: dict[str, pd.DataFrame] = {}
        self._avail: dict[str, np.ndarray] = {}
        self._pos: dict[str, int] = {}
        for name, frame in frames.items():
            for col in ("event_time", "available_time"):
                if col not in frame.columns:
                    raise SchemaError(f"LiveSource: source {name!r} has no {col!r} column; columns are "
                                      f"{sorted(map(str, frame.columns))}")
            at = utc_series(frame["available_time"], field=f"{name}.available_time")
            et = utc_series(frame["event_time"], field=f"{name}.event_time")
            at_us, et_us = _us(at), _us(et)
            order = np.lexsort((np.arange(len(frame)), et_us, at_us))
            self._frames[name] = frame.iloc[order].reset_index(drop=True)
            self._avail[name] = at_us[order]
            self._pos[name] = log.count(name) if name in log.sources() else 0
        self.appended = 0

    def append_until(self, t: datetime) -> int:
        """Append every upstream event available at or before ``t`` not yet in the log; return how many."""
        t_us, n = to_us(t), 0
        for name, frame in self._frames.items():
            lo = self._pos[name]
            hi = int(np.searchsorted(self._avail[name], t_us, side="right"))
            if hi > lo:
                batch = frame.iloc[lo:hi]
                if self.check_quality:
                    self._check(name, batch, t)
                n += self.log.append(name, batch)
                self._pos[name] = hi
        self.appended += n
        return n

    def _check(self, name: str, batch: pd.DataFrame, t: datetime) -> None:
        body = batch[[c for c in batch.columns if c not in ("event_time", "available_time")
                      and not pd.api.types.is_datetime64_any_dtype(batch[c].dtype)]]
        if name not in self._profiles:  # the first batch is the reference
            self._profiles[name] = DataQuality(allow_extra_columns=False).fit(body)
            return
        dq = self._profiles[name]
        report = dq.check(body)
        summary = {"at": t.isoformat(), "rows": report["rows"], **dq.summary(report)}
        self.quality[name] = summary
        if (report["schema_violations"] or summary["max_out_of_range_rate"] > 0.01
                or summary["max_unseen_category_rate"] > 0.01 or summary["max_missing_rate_increase"] > 0.05):
            self.findings.append({"source": name, **summary, "schema_violations": report["schema_violations"]})

    def next_time(self) -> datetime | None:
        """Available time of the next upstream event not yet appended (None when all are in)."""
        pending = [int(self._avail[s][p]) for s, p in self._pos.items() if p < len(self._avail[s])]
        return from_us(min(pending)) if pending else None


def _us(times: pd.Series) -> np.ndarray:
    """Microseconds since the epoch of a UTC timestamp column."""
    return times.dt.tz_localize(None).to_numpy().astype("datetime64[us]").astype("int64")
