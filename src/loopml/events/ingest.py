"""Apply streamed events to an online executor with exactly-once effect.

:class:`Ingestor` is what every stream consumer shares: it validates a batch of decoded events,
applies the good ones to the :class:`~loopml.features.OnlineExecutor`, sets the bad ones aside, and
commits the changed state, the watermark, the quarantine and the consumer's new position in one atomic
step (:mod:`loopml.events.checkpoint`). A consumer that crashes resumes from the stored position with the
stored state; whatever it is handed again from before that position it skips (``is_done``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import le
from typing import Any

from loopml.errors import InvalidConfig, NotReady, SchemaError
from loopml.events.checkpoint import Checkpoint, Quarantined, checkpoint_sink
from loopml.events.replay import EventBatch
from loopml.events.validate import SourceSchema, Validator
from loopml.events.wire import encode, parse_event
from loopml.timeutil import to_us

__all__ = ["IngestStats", "Ingestor"]

_INT = {int}


@dataclass
class IngestStats:
    """What one consumer run did (the checkpoint holds the all-time totals)."""

    applied: int = 0        # events whose effect is now in the state (including sources no feature reads)
    quarantined: int = 0    # events set aside with a reason
    duplicates: int = 0     # redelivered events skipped because their effect was already committed
    skipped: int = 0        # events at or before ``after`` (already in a materialised state)
    commits: int = 0


class _Staged:
    """The executor's store, with writes held back until the ingestor commits them with the checkpoint."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.rows: list[tuple[str, str, bytes]] = []
        self.watermark_us: int | None = None

    def get(self, group: str, key: str) -> bytes | None:
        return self.inner.get(group, key)

    def get_many(self, pairs: Sequence[tuple[str, str]]) -> list[bytes | None]:
        return self.inner.get_many(pairs)

    def put_many(self, group: str, items: Any) -> None:
        self.rows.extend((group, k, b) for k, b in items)

    def get_watermark(self) -> int | None:
        return self.watermark_us if self.watermark_us is not None else self.inner.get_watermark()

    def set_watermark(self, us: int) -> None:
        self.watermark_us = us


class Ingestor:
    """Validate, apply and commit batches of wire events (see :mod:`loopml.events.wire`) for one consumer.

    Parameters
    ----------
    executor
        An :class:`~loopml.features.OnlineExecutor` whose ``store`` is a SQLite or Redis online store.
        The ingestor takes over the store's writes (``executor.store`` is replaced by a staging wrapper).
    consumer
        The checkpoint's name: a restarted consumer with the same name resumes where this one committed.
    schemas
        Declared source schemas (:class:`~loopml.events.validate.SourceSchema`).
    after
        Skip events available at or before this time: they are already in a state built by
        ``loopml materialize --at`` (streaming resumes strictly after T).

    Notes
    -----
    Events of one source must arrive in available-time order (the order the online state needs); an
    event earlier than one already applied for its source is quarantined as late. After a failed commit
    the in-memory state is ahead of the store and the ingestor refuses further work: restart the consumer.
    """

    def __init__(self, executor: Any, consumer: str, *, schemas: Sequence[SourceSchema] = (),
                 after: datetime | None = None) -> None:
        store = executor.store
        if isinstance(store, _Staged):
            store = store.inner
        if store is None:
            raise InvalidConfig("exactly-once ingestion needs an OnlineExecutor with a store to commit into; "
                                "got store=None")
        self.executor = executor
        self.consumer = consumer
        self.sink = checkpoint_sink(store)
        self.checkpoint: Checkpoint = self.sink.load(consumer)
        if executor.watermark_us is None:
            executor.watermark_us = store.get_watermark()
        self._staged = _Staged(store)
        executor.store = self._staged
        self.validator = Validator(executor.features, schemas)
        self._columns = executor.columns()
        self._after_us = None if after is None else to_us(after)
        self._last_at: dict[str, int] = {}
        self._broken: BaseException | None = None
        self.stats = IngestStats()

    def apply(self, events: Sequence[Any], end: str, *, position_of: Callable[[int], str] | None = None,
              undecodable: Sequence[Quarantined] = ()) -> None:
        """Apply ``events`` (decoded JSON values, in arrival order) and commit them with position ``end``.

        ``position_of(i)`` names event i's own position (recorded with a quarantined event);
        ``undecodable`` are records the consumer could not even decode, quarantined as they are.
        """
        if self._broken is not None:
            raise NotReady(f"consumer {self.consumer!r}: an earlier commit failed ({self._broken!r}); "
                           "its in-memory state is ahead of the store, so restart the consumer") from self._broken
        quarantined = list(undecodable)
        # group by source, then check and convert column by column: a per-event Python loop is the cost
        try:
            sources = [o["source"] for o in events]
        except (TypeError, KeyError, IndexError):
            sources = [o.get("source") if type(o) is dict else None for o in events]
        groups: dict[Any, list[int]] = {}
        for i, source in enumerate(sources):
            g = groups.get(source)
            if g is None:
                g = groups[source] = []
            g.append(i)
        applied = 0
        ex = self.executor
        for source, idx in groups.items():
            objs = [events[i] for i in idx]
            cols = self._columnar(source, objs) if type(source) is str else None
            if cols is None:  # something is off (or the times are ISO strings): event by event
                objs = self._sift(source, idx, objs, quarantined, position_of)
                if not objs:
                    continue
                cols = self._columnar(source, objs, checked=True)
                assert cols is not None
            if source not in self._columns:  # a source no feature reads: nothing to update, but it was consumed
                applied += len(objs)
                continue
            self._last_at[source] = cols["available_time"][-1]
            ex.update(source, EventBatch(cols, len(objs)))
            applied += len(objs)
        self._commit(end, applied, quarantined)

    def _columnar(self, source: str, objs: list[Any], *, checked: bool = False) -> dict[str, list[Any]] | None:
        """The events as columns, or None if any needs a closer look: a bad or ISO time, a failed rule,
        a time going backwards, or one at or before ``after``."""
        wanted = self._columns.get(source, ())
        names = ("event_id", "event_time", "available_time", *wanted)
        # one comprehension per column (a column absent from an event is missing there): measured faster
        # than building a tuple per event with itemgetter and transposing
        cols: dict[str, list[Any]] = {c: [o.get(c) for o in objs] for c in names}
        ids, ets, ats = cols["event_id"], cols["event_time"], cols["available_time"]
        if not checked:
            after, last = self._after_us, self._last_at.get(source)
            if (set(map(type, ids)) != _INT or set(map(type, ets)) != _INT or set(map(type, ats)) != _INT
                    or not all(map(le, ets, ats)) or (after is not None and ats[0] <= after)):
                return None
        if checked:
            return cols
        if (last is not None and ats[0] < last) or not all(map(le, ats, ats[1:])):
            return None
        return cols if self.validator.check_columns(source, cols, objs) else None

    def _sift(self, source: Any, idx: list[int], objs: list[Any], quarantined: list[Quarantined],
              position_of: Callable[[int], str] | None) -> list[dict[str, Any]]:
        """The events that pass, in order (times as integer microseconds); the others go to ``quarantined``."""
        keep = []
        last = self._last_at.get(source)
        after = self._after_us
        for i, obj in zip(idx, objs, strict=True):
            try:
                source, eid, et, at = parse_event(obj)
            except SchemaError as e:
                quarantined.append(self._bad(i, obj, str(e), position_of))
                continue
            if after is not None and at <= after:
                self.stats.skipped += 1
                continue
            reason = self.validator.check(source, obj)
            if reason is None and last is not None and at < last:
                reason = (f"source {source!r}: event {eid} is late: available_time {at} us is before {last} us, "
                          "already applied for this source (events of a source must arrive in available-time order)")
            if reason is not None:
                quarantined.append(self._bad(i, obj, reason, position_of, source, eid))
                continue
            last = at
            keep.append(obj if type(obj["event_time"]) is int and type(obj["available_time"]) is int
                        else {**obj, "event_time": et, "available_time": at})
        return keep

    def _commit(self, end: str, applied: int, quarantined: list[Quarantined]) -> None:
        self.executor.flush()
        staged = self._staged
        cp = self.checkpoint
        new = Checkpoint(end, cp.applied + applied, cp.quarantined + len(quarantined))
        try:
            self.sink.commit(self.consumer, new, staged.rows, staged.watermark_us, quarantined)
        except BaseException as e:
            self._broken = e
            raise
        finally:
            staged.rows, staged.watermark_us = [], None
        self.checkpoint = new
        self.stats.applied += applied
        self.stats.quarantined += len(quarantined)
        self.stats.commits += 1

    def _bad(self, i: int, obj: Any, reason: str, position_of: Callable[[int], str] | None,
             source: str | None = None, event_id: int | None = None) -> Quarantined:
        if source is None and isinstance(obj, dict):
            source = obj.get("source") if isinstance(obj.get("source"), str) else None
            event_id = obj.get("event_id") if type(obj.get("event_id")) is int else None
        try:
            raw = encode(obj)
        except (TypeError, ValueError):
            raw = repr(obj)
        return Quarantined(position_of(i) if position_of else "", source, event_id, reason, raw)
