"""Commit online state and a consumer's position together, so a crash can never separate them.

A stream consumer's effect is exactly-once when the state changes of a batch and the position after
it become durable in one atomic step: after a crash the consumer resumes from the stored position with
the stored state, and an event redelivered from before that position is recognised and skipped. Each
online store gets the atomic step it supports: one SQLite transaction in the store's own file, or one
Redis ``MULTI``/``EXEC`` on the store's server. Quarantined events are written in the same step, so
they too are recorded exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from loopml.errors import InvalidConfig

__all__ = ["Checkpoint", "CheckpointSink", "Quarantined", "RedisCheckpointSink", "SQLiteCheckpointSink",
           "checkpoint_sink"]


@dataclass(frozen=True)
class Checkpoint:
    """Where a consumer is: the position after the last committed event, and what it has done so far.

    ``position`` is the consumer's own notation (a Redis Stream entry id, or ``file:offset``);
    ``applied`` counts events whose effect is in the state, ``quarantined`` events set aside.
    """

    position: str | None = None
    applied: int = 0
    quarantined: int = 0


@dataclass(frozen=True)
class Quarantined:
    """An event that failed validation: where it was, why, and its raw text."""

    position: str
    source: str | None
    event_id: int | None
    reason: str
    raw: str


class CheckpointSink(Protocol):
    def load(self, consumer: str) -> Checkpoint: ...
    def commit(self, consumer: str, checkpoint: Checkpoint, rows: Sequence[tuple[str, str, bytes]],
               watermark_us: int | None, quarantined: Sequence[Quarantined]) -> None: ...
    def quarantine(self, consumer: str) -> list[Quarantined]: ...


class SQLiteCheckpointSink:
    """Checkpoints and quarantine as tables in the SQLite online store's file, written in its transactions.

    Writes the store's ``state`` and ``meta`` tables (see :class:`~loopml.features.SQLiteOnlineStore`)
    through its own connection so that state, watermark, position and quarantine commit together.
    """

    def __init__(self, path: Any) -> None:
        self.path = path
        self._con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute("CREATE TABLE IF NOT EXISTS stream_checkpoint (consumer TEXT PRIMARY KEY, "
                          "position TEXT, applied INTEGER NOT NULL, quarantined INTEGER NOT NULL, "
                          "updated_us INTEGER NOT NULL)")
        self._con.execute("CREATE TABLE IF NOT EXISTS quarantine (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                          "consumer TEXT NOT NULL, position TEXT NOT NULL, source TEXT, event_id INTEGER, "
                          "reason TEXT NOT NULL, raw TEXT NOT NULL, at_us INTEGER NOT NULL)")

    def load(self, consumer: str) -> Checkpoint:
        row = self._con.execute("SELECT position, applied, quarantined FROM stream_checkpoint WHERE consumer = ?",
                                (consumer,)).fetchone()
        return Checkpoint() if row is None else Checkpoint(row[0], int(row[1]), int(row[2]))

    def commit(self, consumer: str, checkpoint: Checkpoint, rows: Sequence[tuple[str, str, bytes]],
               watermark_us: int | None, quarantined: Sequence[Quarantined]) -> None:
        now = time.time_ns() // 1000
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany("INSERT OR REPLACE INTO state (grp, key, blob) VALUES (?, ?, ?)", rows)
            if watermark_us is not None:
                con.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('watermark_us', ?)", (str(int(watermark_us)),))
            if quarantined:
                con.executemany("INSERT INTO quarantine (consumer, position, source, event_id, reason, raw, at_us) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [(consumer, q.position, q.source, q.event_id, q.reason, q.raw, now) for q in quarantined])
            con.execute("INSERT OR REPLACE INTO stream_checkpoint VALUES (?, ?, ?, ?, ?)",
                        (consumer, checkpoint.position, checkpoint.applied, checkpoint.quarantined, now))
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def quarantine(self, consumer: str) -> list[Quarantined]:
        rows = self._con.execute("SELECT position, source, event_id, reason, raw FROM quarantine WHERE consumer = ? "
                                 "ORDER BY seq", (consumer,)).fetchall()
        return [Quarantined(*r) for r in rows]


class RedisCheckpointSink:
    """Checkpoints in the Redis online store's namespace, committed with the state in one MULTI/EXEC.

    Keys (``N`` = the store's namespace): entity hashes ``N:e:KEY`` as :class:`~loopml.features.RedisOnlineStore`
    lays them out, ``N:watermark_us``, ``N:checkpoint:CONSUMER`` (a hash) and ``N:quarantine:CONSUMER``
    (a list of JSON records).
    """

    def __init__(self, url: str, namespace: str) -> None:
        import redis  # optional dependency: `pip install loopml[redis]`

        self.namespace = namespace
        self._redis: Any = redis.Redis.from_url(url)

    def load(self, consumer: str) -> Checkpoint:
        h = self._redis.hgetall(f"{self.namespace}:checkpoint:{consumer}")
        if not h:
            return Checkpoint()
        position = h.get(b"position")
        return Checkpoint(position.decode() if position else None, int(h[b"applied"]), int(h[b"quarantined"]))

    def commit(self, consumer: str, checkpoint: Checkpoint, rows: Sequence[tuple[str, str, bytes]],
               watermark_us: int | None, quarantined: Sequence[Quarantined]) -> None:
        ns = self.namespace
        pipe = self._redis.pipeline(transaction=True)   # MULTI ... EXEC: all or nothing
        for group, key, blob in rows:
            pipe.hset(f"{ns}:e:{key}", group, blob)
        if watermark_us is not None:
            pipe.set(f"{ns}:watermark_us", str(int(watermark_us)))
        if quarantined:
            pipe.rpush(f"{ns}:quarantine:{consumer}", *[json.dumps(q.__dict__) for q in quarantined])
        pipe.hset(f"{ns}:checkpoint:{consumer}", mapping={
            "position": checkpoint.position or "", "applied": checkpoint.applied,
            "quarantined": checkpoint.quarantined, "updated_us": time.time_ns() // 1000})
        pipe.execute()

    def quarantine(self, consumer: str) -> list[Quarantined]:
        return [Quarantined(**json.loads(r)) for r in self._redis.lrange(f"{self.namespace}:quarantine:{consumer}", 0, -1)]


def checkpoint_sink(store: Any) -> SQLiteCheckpointSink | RedisCheckpointSink:
    """The sink that commits atomically with ``store`` (a SQLite or Redis online store)."""
    from loopml.features.store import RedisOnlineStore, SQLiteOnlineStore

    if isinstance(store, SQLiteOnlineStore):
        return SQLiteCheckpointSink(store.path)
    if isinstance(store, RedisOnlineStore):
        return RedisCheckpointSink(store.url, store.namespace)
    raise InvalidConfig(f"exactly-once ingestion needs a SQLiteOnlineStore or RedisOnlineStore to commit into; "
                        f"got {type(store).__name__}")
