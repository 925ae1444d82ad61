"""Consume events from a Redis Stream with a consumer group; publish events to one.

Each stream entry holds one event as JSON in the field ``e`` (:mod:`loopml.events.wire`). The
consumer reads with ``XREADGROUP``, applies and commits a batch through an
:class:`~loopml.events.ingest.Ingestor` (state and position together), then ``XACK``s it. After a
crash, entries delivered but never acknowledged stay pending: a restarted consumer (same name or not)
takes them back -- its own with ``XREADGROUP ... 0``, a dead consumer's with ``XAUTOCLAIM`` once they
have been idle ``claim_idle_ms`` -- before reading new ones. An entry at or before the committed
position was applied already (the crash fell between commit and ack) and is only acknowledged.

The checkpoint is kept per (stream, group), not per consumer name, and applying in entry-id order is
what makes "at or before the position" mean "done": run one consumer per stream and online store at a
time. A replacement with another name continues the same checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from loopml.events.checkpoint import Quarantined
from loopml.events.ingest import Ingestor, IngestStats
from loopml.events.validate import SourceSchema
from loopml.events.wire import decode_many, encode

__all__ = ["RedisStreamConsumer", "RedisStreamProducer"]

FIELD = b"e"


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class RedisStreamProducer:
    """Publish events to a Redis Stream, pipelined.

    Parameters
    ----------
    url
        ``redis://host:port/db``.
    stream
        The stream's key.
    maxlen
        Approximate cap on the stream's length (``XADD MAXLEN ~``); None keeps everything.
    """

    def __init__(self, url: str, stream: str, *, maxlen: int | None = None) -> None:
        import redis  # optional dependency: `pip install loopml[redis]`

        self.url, self.stream, self.maxlen = url, stream, maxlen
        self._redis: Any = redis.Redis.from_url(url)

    def publish(self, events: Iterable[Mapping[str, Any]], *, chunk: int = 2000) -> int:
        """XADD every event (in order); return how many were published."""
        n = 0
        pipe = self._redis.pipeline(transaction=False)
        for event in events:
            pipe.xadd(self.stream, {FIELD: encode(event)}, maxlen=self.maxlen, approximate=True)
            n += 1
            if n % chunk == 0:
                pipe.execute()
        pipe.execute()
        return n


class RedisStreamConsumer:
    """Apply a Redis Stream's events to an online executor, exactly once in effect.

    Parameters
    ----------
    executor
        An :class:`~loopml.features.OnlineExecutor` with a SQLite or Redis online store.
    url, stream
        Where the events are.
    group, consumer
        The consumer group (created at the stream's start if missing) and this consumer's name in it.
    batch
        Entries per read and per commit.
    claim_idle_ms
        A dead consumer's pending entries are claimed once idle this long.
    block_ms
        How long one read waits for new entries.
    schemas, after
        See :class:`~loopml.events.ingest.Ingestor`.
    """

    def __init__(self, executor: Any, url: str, stream: str, *, group: str = "loopml", consumer: str = "ingest-1",
                 batch: int = 1000, claim_idle_ms: int = 30_000, block_ms: int = 500,
                 schemas: Sequence[SourceSchema] = (), after: datetime | None = None) -> None:
        import redis  # optional dependency: `pip install loopml[redis]`

        self.url, self.stream, self.group, self.consumer = url, stream, group, consumer
        self.batch, self.claim_idle_ms, self.block_ms = batch, claim_idle_ms, block_ms
        self._redis: Any = redis.Redis.from_url(url)
        self.ingestor = Ingestor(executor, f"redis:{stream}:{group}", schemas=schemas, after=after)
        try:
            self._redis.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._recovered = False

    @property
    def stats(self) -> IngestStats:
        return self.ingestor.stats

    def recover(self) -> int:
        """Take back and apply every pending (delivered, unacknowledged) entry; return how many."""
        n = 0
        while True:  # our own pending entries, from before a restart under the same name
            got = self._redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=self.batch)
            entries = got[0][1] if got else []
            if not entries:
                break
            self._handle(entries)
            n += len(entries)
        while self._redis.xpending(self.stream, self.group)["pending"]:
            start, claimed_any = "0-0", False
            while True:  # a dead consumer's entries, once idle long enough that it is surely dead
                start, entries, *_ = self._redis.xautoclaim(self.stream, self.group, self.consumer,
                                                             self.claim_idle_ms, start, count=self.batch)
                if entries:
                    self._handle(entries)
                    n += len(entries)
                    claimed_any = True
                if _id(start) == (0, 0):
                    break
            if not claimed_any:
                # entries not yet claimable: wait for them rather than apply newer ones first
                time.sleep(min(self.claim_idle_ms / 4000, 1.0))
        self._recovered = True
        return n

    def poll(self) -> int:
        """Read and apply one batch of new entries (waiting up to ``block_ms``); return how many."""
        if not self._recovered:
            self.recover()
        got = self._redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=self.batch,
                                     block=self.block_ms)
        entries = got[0][1] if got else []
        if entries:
            self._handle(entries)
        return len(entries)

    def run(self, *, idle_exit: float | None = None, max_events: int | None = None) -> IngestStats:
        """Consume until no entry arrived for ``idle_exit`` seconds (None: forever) or ``max_events`` were read."""
        self.recover()
        seen, idle_since = 0, time.monotonic()
        while max_events is None or seen < max_events:
            n = self.poll()
            seen += n
            if n:
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                break
        return self.stats

    def _handle(self, entries: Sequence[tuple[bytes, Mapping[bytes, bytes] | None]]) -> None:
        done = self.ingestor.checkpoint.position
        done_id = _id(done) if done else (-1, -1)
        fresh = [(eid, fields) for eid, fields in entries if _id(eid) > done_id and fields]
        self.ingestor.stats.duplicates += sum(1 for eid, fields in entries if fields and _id(eid) <= done_id)
        if fresh:
            all_ids = [eid.decode() for eid, _ in fresh]
            good, events, bad = decode_many([fields.get(FIELD) for _, fields in fresh])
            ids = [all_ids[i] for i in good]
            undecodable = [Quarantined(all_ids[i], None, None, reason, raw) for i, raw, reason in bad]
            self.ingestor.apply(events, all_ids[-1], position_of=lambda i: ids[i], undecodable=undecodable)
        self._redis.xack(self.stream, self.group, *[eid for eid, _ in entries])
