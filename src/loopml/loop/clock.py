"""Clocks that drive the loop controller: replayed history or the wall clock (optionally sped up).

The controller asks a clock two things: what time it is (:meth:`Clock.now`) and to wait until the
next thing it has to do (:meth:`Clock.sleep_until`). A :class:`ReplayClock` jumps straight there, so
a year of history replays as fast as the work allows; a :class:`WallClock` really waits, so the same
controller runs live. A wall clock can start at a chosen instant and run faster than real time
(``speed=3600``: an hour a second), which is how a live run is rehearsed on history. Either way
the controller code is the same; only what ``now`` means differs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from loopml.errors import InvalidConfig

__all__ = ["Clock", "ReplayClock", "WallClock"]


@runtime_checkable
class Clock(Protocol):
    """What the controller needs from time."""

    #: True if the event log may still grow while the controller runs (it re-reads it each step).
    live: bool

    def now(self) -> datetime: ...

    def sleep_until(self, t: datetime, stop: threading.Event | None = None) -> None:
        """Return at ``t`` (or at once if ``t`` has passed), or as soon as ``stop`` is set."""
        ...


class ReplayClock:
    """Replayed history: ``sleep_until(t)`` moves the clock to ``t`` at once.

    Examples
    --------
    >>> from datetime import datetime, UTC
    >>> clock = ReplayClock(datetime(2013, 3, 1, tzinfo=UTC))
    >>> clock.sleep_until(datetime(2013, 3, 2, tzinfo=UTC)); clock.now().day
    2
    """

    live = False

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def sleep_until(self, t: datetime, stop: threading.Event | None = None) -> None:
        self._now = max(self._now, t)


class WallClock:
    """The wall clock, optionally started at ``origin`` and sped up by ``speed``.

    ``now() = origin + speed * (seconds since the first reading)``: the clock starts when the
    controller first asks it the time, after its setup (loading data, training a first model), so
    a sped-up rehearsal does not begin behind. Without ``origin`` it is the real UTC time (and
    ``speed`` must be 1).

    Parameters
    ----------
    origin
        The time ``now()`` returns at construction (e.g. the start of a rehearsal on history).
    speed
        Logical seconds per real second (> 0).
    timer, wait
        Injected for tests: a monotonic timer in seconds and a ``wait(seconds, stop)`` function.
    """

    live = True

    def __init__(self, origin: datetime | None = None, *, speed: float = 1.0,
                 timer: Callable[[], float] = time.monotonic,
                 wait: Callable[[float, threading.Event | None], None] | None = None) -> None:
        if not isinstance(speed, int | float) or not speed > 0:
            raise InvalidConfig(f"WallClock.speed must be a number > 0; got {speed!r}")
        if origin is None and speed != 1:
            raise InvalidConfig(f"WallClock.speed={speed!r} needs an origin (a sped-up clock starts somewhere); "
                                "pass origin=... or speed=1")
        self.origin = origin if origin is not None else datetime.now(UTC)
        self.speed = float(speed)
        self._timer = timer
        self._t0: float | None = None
        self._wait = wait or _wait

    def now(self) -> datetime:
        t = self._timer()
        if self._t0 is None:
            self._t0 = t
        return self.origin + timedelta(seconds=(t - self._t0) * self.speed)

    def sleep_until(self, t: datetime, stop: threading.Event | None = None) -> None:
        seconds = (t - self.now()).total_seconds() / self.speed
        if seconds > 0:
            self._wait(seconds, stop)


def _wait(seconds: float, stop: threading.Event | None) -> None:
    if stop is None:
        time.sleep(seconds)
    else:
        stop.wait(seconds)
