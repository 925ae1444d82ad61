"""Alerts on monitored values, with hysteresis and a minimum sample size.

A metric that hovers around its threshold would raise and clear an alert on every update if one
threshold did both jobs. :class:`Alert` uses two: it *opens* when the value crosses ``open_above``
and *closes* only when the value is back past ``close_below``, a safer level. In between the alert
keeps its state and emits nothing, so a flickering value gives one event, not one per update.
A value computed from fewer than ``min_samples`` rows is too noisy to act on and changes nothing.

:class:`AlertBook` holds named alerts and serialises their state to a JSON-safe dict, so open
alerts survive a restart of the process that watches them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from sklearn.base import BaseEstimator

from loopml.errors import InvalidConfig, SchemaError, closest

__all__ = ["Alert", "AlertBook"]

_FORMAT = "loopml.alerts/1"
_DIRECTIONS = ("above", "below")
_Stamp = str | int | float | None


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _stamp(at: Any) -> _Stamp:
    """``at`` in a JSON-safe form: dates and datetimes become ISO-8601 strings."""
    if isinstance(at, (datetime, date)):  # pandas.Timestamp is a datetime
        return at.isoformat()
    if at is None or isinstance(at, str):
        return at
    if _is_number(at) and math.isfinite(at):
        return int(at) if isinstance(at, numbers.Integral) else float(at)
    raise SchemaError(f"at must be a datetime, an ISO-8601 string, a number or None; got {at!r}.")


class Alert(BaseEstimator):
    """A two-threshold alert on one monitored value (a state machine fed with :meth:`update`).

    With ``direction="above"`` (a value that is bad when high, such as log loss or PSI) the alert
    opens at the first update whose value is ``> open_above`` and closes at the first later update
    whose value is ``< close_below``; ``close_below < open_above`` is required. With
    ``direction="below"`` (bad when low, such as ROC AUC) both comparisons flip: the alert opens
    when the value is ``< open_above`` and closes when it is ``> close_below``, so
    ``close_below > open_above`` is required. The parameter names describe the ``"above"`` case;
    read them as "open threshold" and "close threshold".

    Parameters
    ----------
    name
        What the alert watches, e.g. ``"log_loss:v3"``; the key in an :class:`AlertBook`.
    open_above
        Threshold whose crossing opens the alert.
    close_below
        Threshold whose crossing closes it again.
    min_samples
        Updates whose ``n`` is below this neither open nor close the alert.
    direction
        ``"above"`` or ``"below"``: which side of the thresholds is bad.

    Attributes
    ----------
    is_open_ : bool
        Whether the alert is open now.
    history_ : list of dict
        One entry per ``"opened"`` or ``"closed"`` event, with its evidence: ``event``, ``value``,
        ``n``, ``at``, ``open_above``, ``close_below``, ``direction``, ``min_samples``.
    n_updates_ : int
        Updates seen, including those ignored for too few samples.

    Examples
    --------
    >>> alert = Alert("log_loss", open_above=0.5, close_below=0.45)
    >>> [alert.update(v) for v in (0.49, 0.51, 0.50, 0.52, 0.46, 0.44)]
    [None, 'opened', None, None, None, 'closed']
    """

    def __init__(
        self,
        name: str,
        *,
        open_above: float,
        close_below: float,
        min_samples: int = 1,
        direction: str = "above",
    ) -> None:
        self.name = name
        self.open_above = open_above
        self.close_below = close_below
        self.min_samples = min_samples
        self.direction = direction

    def _validate(self) -> None:
        where = f"Alert {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfig(f"Alert name must be a non-empty string; got {self.name!r}.")
        if self.direction not in _DIRECTIONS:
            hint = closest(str(self.direction), _DIRECTIONS)
            extra = f" Did you mean {hint[0]!r}?" if hint else ""
            raise InvalidConfig(
                f"{where}: direction must be one of {list(_DIRECTIONS)}; got {self.direction!r}.{extra}"
            )
        for field in ("open_above", "close_below"):
            value = getattr(self, field)
            if not _is_number(value) or not math.isfinite(value):
                raise InvalidConfig(f"{where}: {field} must be a finite number; got {value!r}.")
        if self.direction == "above" and not self.close_below < self.open_above:
            raise InvalidConfig(
                f"{where}: close_below must be below open_above for hysteresis; got close_below="
                f"{self.close_below!r} >= open_above={self.open_above!r} "
                "(e.g. open_above=0.5, close_below=0.45)."
            )
        if self.direction == "below" and not self.close_below > self.open_above:
            raise InvalidConfig(
                f"{where}: with direction='below' the alert opens when the value drops below open_above and "
                f"closes when it rises above close_below, so close_below must exceed open_above; got "
                f"close_below={self.close_below!r} <= open_above={self.open_above!r} "
                "(e.g. open_above=0.70, close_below=0.75 for an AUC)."
            )
        m = self.min_samples
        if not isinstance(m, numbers.Integral) or isinstance(m, bool) or m < 1:
            raise InvalidConfig(f"{where}: min_samples must be an integer >= 1; got {self.min_samples!r}.")

    def _init_state(self) -> None:
        if not hasattr(self, "history_"):
            self._validate()
            self.is_open_ = False
            self.history_: list[dict[str, Any]] = []
            self.n_updates_ = 0

    @property
    def is_open(self) -> bool:
        """Whether the alert is open (``False`` before the first update)."""
        return bool(getattr(self, "is_open_", False))

    def _breached(self, value: float) -> bool:
        return value > self.open_above if self.direction == "above" else value < self.open_above

    def _cleared(self, value: float) -> bool:
        return value < self.close_below if self.direction == "above" else value > self.close_below

    def update(self, value: float, *, n: int | None = None, at: Any = None) -> str | None:
        """Feed one value; return ``"opened"``, ``"closed"`` or ``None`` (no change).

        Parameters
        ----------
        value
            The monitored value (finite).
        n
            Rows the value was computed from. Required when ``min_samples > 1``; a value with
            ``n < min_samples`` is counted but cannot open or close the alert.
        at
            When the value was observed (datetime, ISO string, number or ``None``); stored with any
            event as evidence, datetimes as ISO-8601 strings.
        """
        self._init_state()
        if not _is_number(value) or not math.isfinite(value):
            raise SchemaError(f"Alert {self.name!r}: value must be a finite number; got {value!r}.")
        if n is None:
            if self.min_samples > 1:
                raise SchemaError(
                    f"Alert {self.name!r} has min_samples={self.min_samples}, so update() needs n, "
                    "the number of rows behind the value; got n=None."
                )
        elif not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
            raise SchemaError(f"Alert {self.name!r}: n must be an integer >= 0; got {n!r}.")
        stamp = _stamp(at)
        self.n_updates_ += 1
        if n is not None and n < self.min_samples:
            return None
        if not self.is_open_ and self._breached(value):
            event = "opened"
        elif self.is_open_ and self._cleared(value):
            event = "closed"
        else:
            return None
        self.is_open_ = event == "opened"
        self.history_.append(
            {
                "event": event,
                "value": float(value),
                "n": None if n is None else int(n),
                "at": stamp,
                "open_above": float(self.open_above),
                "close_below": float(self.close_below),
                "direction": self.direction,
                "min_samples": int(self.min_samples),
            }
        )
        return event

    def to_dict(self) -> dict[str, Any]:
        """Parameters and state as a JSON-safe dict; :meth:`from_dict` restores it."""
        self._validate()
        return {
            "name": self.name,
            "open_above": float(self.open_above),
            "close_below": float(self.close_below),
            "min_samples": int(self.min_samples),
            "direction": self.direction,
            "is_open": self.is_open,
            "n_updates": int(getattr(self, "n_updates_", 0)),
            "history": [dict(e) for e in getattr(self, "history_", [])],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """An alert in the state :meth:`to_dict` recorded."""
        try:
            alert = cls(
                data["name"],
                open_above=data["open_above"],
                close_below=data["close_below"],
                min_samples=data["min_samples"],
                direction=data["direction"],
            )
            alert._init_state()
            alert.is_open_ = bool(data["is_open"])
            alert.n_updates_ = int(data["n_updates"])
            alert.history_ = [dict(e) for e in data["history"]]
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidConfig):
                raise
            raise InvalidConfig(f"Stored alert is malformed: {type(exc).__name__}: {exc}.") from exc
        return alert


class AlertBook:
    """Several named :class:`Alert` objects, updated by name and stored together.

    Parameters
    ----------
    alerts
        Alerts to hold; names must be unique. More can be added with :meth:`add`.

    Examples
    --------
    >>> book = AlertBook([Alert("psi", open_above=0.25, close_below=0.1)])
    >>> book.update("psi", 0.3)
    'opened'
    >>> AlertBook.from_dict(book.to_dict()).open_alerts()
    ['psi']
    """

    def __init__(self, alerts: Iterable[Alert] = ()) -> None:
        self.alerts: dict[str, Alert] = {}
        for alert in alerts:
            self.add(alert)

    def add(self, alert: Alert) -> AlertBook:
        """Hold ``alert`` under its name (validated now, so a bad alert fails early)."""
        if not isinstance(alert, Alert):
            raise InvalidConfig(f"AlertBook holds Alert objects; got {type(alert).__name__} ({alert!r}).")
        alert._validate()
        if alert.name in self.alerts:
            raise InvalidConfig(
                f"AlertBook already holds an alert named {alert.name!r}; names must be unique."
            )
        self.alerts[alert.name] = alert
        return self

    def __getitem__(self, name: str) -> Alert:
        if name not in self.alerts:
            hint = closest(str(name), self.alerts)
            extra = f" Closest matches: {hint}." if hint else f" Known alerts: {sorted(self.alerts)}."
            raise InvalidConfig(f"AlertBook has no alert named {name!r}.{extra}")
        return self.alerts[name]

    def __contains__(self, name: object) -> bool:
        return name in self.alerts

    def __len__(self) -> int:
        return len(self.alerts)

    def update(self, name: str, value: float, *, n: int | None = None, at: Any = None) -> str | None:
        """:meth:`Alert.update` on the alert called ``name``."""
        return self[name].update(value, n=n, at=at)

    def open_alerts(self) -> list[str]:
        """Names of the open alerts, in the order they were added."""
        return [name for name, alert in self.alerts.items() if alert.is_open]

    def to_dict(self) -> dict[str, Any]:
        """Every alert's parameters and state as a JSON-safe dict."""
        return {"format": _FORMAT, "alerts": [a.to_dict() for a in self.alerts.values()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertBook:
        """A book in the state :meth:`to_dict` recorded (e.g. after a JSON round trip)."""
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise InvalidConfig(f"Not a stored alert book: expected format {_FORMAT!r}; got {got!r}.")
        entries = data.get("alerts")
        if not isinstance(entries, list):
            raise InvalidConfig(f"Stored alert book is malformed: 'alerts' must be a list; got {entries!r}.")
        return cls(Alert.from_dict(e) for e in entries)
