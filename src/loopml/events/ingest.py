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
from typing import Any

from loopml.errors import InvalidConfig, NotReady, SchemaError
from loopml.events.checkpoint import Checkpoint, Quarantined, checkpoint_sink
from loopml.events.replay import EventBatch
from loopml.events.validate import SourceSchema, Validator
from loopml.events.wire import encode, parse_event
from loopml.timeutil import to_us

__all__ = ["IngestStats", "Ingestor"]


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
        stats = self.stats
        quarantined = list(undecodable)
        columns, after, last_at, check = self._columns, self._after_us, self._last_at, self.validator.check
        batches: dict[str, dict[str, list[Any]]] = {}
        applied = 0
        for i, obj in enumerate(events):
            try:
                source, eid, et, at = parse_event(obj)
            except SchemaError as e:
                quarantined.append(self._bad(i, obj, str(e), position_of))
                continue
            if after is not None and at <= after:
                stats.skipped += 1
                continue
            cols = columns.get(source)
            if cols is None:  # a source no feature reads: nothing to update, but it was consumed
                applied += 1
                continue
            reason = check(source, obj)
            if reason is None and at < last_at.get(source, at):
                reason = (f"source {source!r}: event {eid} is late: available_time {at} us is before {last_at[source]} us, "
                          "already applied for this source (events of a source must arrive in available-time order)")
            if reason is not None:
                quarantined.append(self._bad(i, obj, reason, position_of, source, eid))
                continue
            last_at[source] = at
            b = batches.get(source)
            if b is None:
                b = batches[source] = {"event_id": [], "event_time": [], "available_time": [], **{c: [] for c in cols}}
            b["event_id"].append(eid)
            b["event_time"].append(et)
            b["available_time"].append(at)
            for c in cols:
                b[c].append(obj.get(c))
            applied += 1
        ex = self.executor
        for source, b in batches.items():
            ex.update(source, EventBatch(b, len(b["event_id"])))
        self._commit(end, applied, quarantined)

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
