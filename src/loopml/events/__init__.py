"""The event log: append-only, time-stamped facts, replayable in the order the system learnt them.

Each source (``departures``, ``weather``, ...) is a folder of immutable Parquet segments. Every
row carries three system columns beside its own: ``event_id`` (int64, unique and increasing
within the source), ``event_time`` (when it happened) and ``available_time`` (when the system
could first know it), both UTC. Reads go through DuckDB; :class:`Replayer` walks sources in
available-time order, which is how the online executor and the loop controller see history.
"""

from loopml.events.log import SYSTEM_COLUMNS, EventLog
from loopml.events.replay import EventBatch, Replayer

__all__ = ["SYSTEM_COLUMNS", "EventBatch", "EventLog", "Replayer"]
