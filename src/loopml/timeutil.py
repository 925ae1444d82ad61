"""One place for loopml's notion of time.

All times inside loopml are timezone-aware UTC. Tables carry them as ``timestamp[us, tz=UTC]``
columns; Python code passes ``datetime`` objects with ``tzinfo=UTC``; the online state stores
integer microseconds since the epoch (``to_us``) so that comparisons are exact and cheap.

Every fact has two times (see DESIGN.md): its *event time* (when it happened) and its *available
time* (when the system could first know it). Features and labels at prediction time ``t`` may use
only facts whose available time is ``<= t``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from loopml.errors import BadTimestamp

__all__ = ["EPOCH", "duration_us", "from_us", "parse_duration", "parse_time", "to_us", "utc_series"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: str | datetime | pd.Timestamp, *, field: str = "time") -> datetime:
    """Parse an ISO-8601 string or datetime into an aware UTC datetime.

    A naive value is taken to be UTC already (loopml's convention); anything unparseable raises
    :class:`~loopml.errors.BadTimestamp` naming ``field``.

    Examples
    --------
    >>> parse_time("2013-06-15T08:00:00Z")
    datetime.datetime(2013, 6, 15, 8, 0, tzinfo=datetime.timezone.utc)
    >>> parse_time("2013-06-15")
    datetime.datetime(2013, 6, 15, 0, 0, tzinfo=datetime.timezone.utc)
    """
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadTimestamp(
                f"{field!r} must be an ISO-8601 timestamp such as '2013-06-15T08:00:00Z'; got {value!r}"
            ) from None
    else:
        raise BadTimestamp(f"{field!r} must be an ISO-8601 string or datetime; got {type(value).__name__} {value!r}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_duration(value: str | timedelta) -> timedelta:
    """Parse '90s', '15m', '3h', '7d' (or a timedelta) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    text = str(value).strip()
    if len(text) >= 2 and text[-1] in units:
        try:
            return timedelta(**{units[text[-1]]: float(text[:-1])})
        except ValueError:
            pass
    raise ValueError(f"duration must look like '90s', '15m', '3h', '7d' or '2w'; got {value!r}")


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact integer arithmetic)."""
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def duration_us(td: timedelta) -> int:
    """Whole microseconds in a timedelta (exact)."""
    return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def utc_series(values: pd.Series, *, field: str) -> pd.Series:
    """Convert a column to ``datetime64[us, UTC]``, naming ``field`` if it cannot be parsed."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    if pd.api.types.is_numeric_dtype(values.dtype):
        example = values.dropna().iloc[0].item() if values.notna().any() else None
        raise BadTimestamp(f"Column {field!r} must be a timestamp; got {values.dtype} (e.g. {example!r})")
    try:
        return pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    except (ValueError, TypeError):
        bad = None
        for v in values.dropna():
            try:
                pd.Timestamp(v)
            except (ValueError, TypeError):
                bad = v
                break
        raise BadTimestamp(
            f"Column {field!r} must hold ISO-8601 timestamps; could not parse {bad!r}"
        ) from None
