"""The wire format of a streamed event: one JSON object, the same on a Redis Stream and in a JSON-lines file.

::

    {"source": "departures", "event_id": 41, "event_time": 1357034400000000,
     "available_time": "2013-01-01T10:00:00Z", "origin": "EWR", "dep_delay": 2.0}

``source`` names the event-log source; ``event_id`` is the event's id within that source; the two times
are integer microseconds since the epoch (UTC) or ISO-8601 strings (a naive one is UTC). Every other
key is a column of the source. A timestamp-valued column is written as an ISO-8601 string.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from loopml.errors import BadTimestamp, SchemaError
from loopml.events.log import EventLog
from loopml.events.replay import EventBatch
from loopml.timeutil import parse_time, to_us

__all__ = ["decode_many", "decode_time", "encode", "events_from_log", "parse_event"]


def encode(event: Mapping[str, Any]) -> str:
    """One event as compact JSON (datetimes as ISO-8601 strings, NaN as null: both mean missing)."""
    return orjson.dumps(event, default=_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars orjson does not know
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} {value!r} in an event")


def decode_time(value: Any, *, field: str) -> int:
    """Integer microseconds (UTC) of a wire time: an int of microseconds or an ISO-8601 string."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        return to_us(parse_time(value, field=field))
    raise BadTimestamp(f"{field!r} must be integer microseconds since the epoch or an ISO-8601 string; "
                       f"got {type(value).__name__} {value!r}")


def parse_event(obj: Any) -> tuple[str, int, int, int]:
    """(source, event_id, event_time_us, available_time_us) of a decoded event, or a SchemaError naming the field."""
    if not isinstance(obj, dict):
        raise SchemaError(f"an event must be a JSON object; got {type(obj).__name__} {_short(obj)}")
    source = obj.get("source")
    if not isinstance(source, str):
        raise SchemaError(f"event field 'source' must be a source name such as 'departures'; got {source!r}")
    event_id = obj.get("event_id")
    if type(event_id) is not int:
        raise SchemaError(f"event field 'event_id' of source {source!r} must be an integer; got {event_id!r}")
    et = decode_time(obj.get("event_time"), field=f"{source}.event_time")
    at = decode_time(obj.get("available_time"), field=f"{source}.available_time")
    if at < et:
        raise SchemaError(f"source {source!r} event {event_id}: available_time {at} us precedes event_time {et} us; "
                          "a fact cannot be known before it happens")
    return source, event_id, et, at


def decode_many(values: Sequence[bytes | None]) -> tuple[list[int], list[Any], list[tuple[int, str, str]]]:
    """JSON-decode many event payloads: (indices decoded, their values, [(index, raw, reason)] of the rest).

    The fast path parses all payloads as one JSON array; it is taken only when every payload is one
    object (starts with ``{``, ends with ``}``) and the array has one element per payload, so a payload
    cannot swallow or split another.
    """
    if values and all(v is not None and v[:1] == b"{" and v[-1:] == b"}" for v in values):
        try:
            parsed = orjson.loads(b"[" + b",".join(values) + b"]")  # type: ignore[arg-type]
        except ValueError:
            parsed = None
        if parsed is not None and len(parsed) == len(values):
            return list(range(len(values))), parsed, []
    good: list[int] = []
    events: list[Any] = []
    bad: list[tuple[int, str, str]] = []
    for i, v in enumerate(values):
        if v is None:
            bad.append((i, "", "no payload (a stream entry without the event field)"))
            continue
        try:
            events.append(orjson.loads(v))
            good.append(i)
        except ValueError as e:
            bad.append((i, v.decode("utf-8", "replace"), f"not valid JSON: {e}"))
    return good, events, bad


def _short(value: Any, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


def events_from_log(log: EventLog, columns: Mapping[str, Sequence[str]], *, start: datetime | None = None,
                    end: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Events of the log's sources (``columns``: source -> columns to carry) as wire dicts.

    Sources are merged in (available_time, event_time, source, event_id) order, the order a live
    producer would publish them in; ``start <= available_time < end``. Times are integer microseconds.
    """
    streams = []
    for i, (source, cols) in enumerate(sorted(columns.items())):
        batch = EventBatch.from_table(log.read(source, start=start, end=end, columns=list(cols)), list(cols))
        streams.append(_rows(source, i, batch))
    for _, row in heapq.merge(*streams, key=lambda item: item[0]):
        yield row


def _rows(source: str, rank: int, batch: EventBatch) -> Iterator[tuple[tuple[int, int, int, int], dict[str, Any]]]:
    names = [n for n in batch.columns if n not in ("event_id", "event_time", "available_time")]
    ids, ets, ats = batch["event_id"], batch["event_time"], batch["available_time"]
    values = [batch[n] for n in names]
    for i in range(batch.n):
        row = {"source": source, "event_id": ids[i], "event_time": ets[i], "available_time": ats[i]}
        for n, col in zip(names, values, strict=True):
            row[n] = col[i]
        yield (ats[i], ets[i], rank, ids[i]), row
