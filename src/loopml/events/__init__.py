"""The event log: append-only, time-stamped facts, replayable in the order the system learnt them.

Each source (``departures``, ``weather``, ...) is a folder of immutable Parquet segments. Every
row carries three system columns beside its own: ``event_id`` (int64, unique and increasing
within the source), ``event_time`` (when it happened) and ``available_time`` (when the system
could first know it), both UTC. Reads go through DuckDB; :class:`Replayer` walks sources in
available-time order, which is how the online executor and the loop controller see history.

Live events arrive on a stream instead: :class:`RedisStreamConsumer` (a Redis Stream read by a
consumer group) and :class:`JsonLinesTail` (appended JSON-lines files) apply them to the online
state through an :class:`Ingestor`, which validates each event (bad ones go to a quarantine with the
reason) and commits state and stream position in one atomic step, so that a crash and the
redeliveries after it never count an event twice.
"""

from loopml.events.checkpoint import Checkpoint, Quarantined
from loopml.events.ingest import Ingestor, IngestStats
from loopml.events.log import SYSTEM_COLUMNS, EventLog
from loopml.events.replay import EventBatch, Replayer
from loopml.events.stream import RedisStreamConsumer, RedisStreamProducer
from loopml.events.tail import JsonLinesTail, append_jsonl
from loopml.events.validate import Column, SourceSchema, Validator
from loopml.events.wire import events_from_log

__all__ = [
    "SYSTEM_COLUMNS",
    "Checkpoint",
    "Column",
    "EventBatch",
    "EventLog",
    "IngestStats",
    "Ingestor",
    "JsonLinesTail",
    "Quarantined",
    "RedisStreamConsumer",
    "RedisStreamProducer",
    "Replayer",
    "SourceSchema",
    "Validator",
    "append_jsonl",
    "events_from_log",
]
