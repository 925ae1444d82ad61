"""Freshness of online values: the available time of the newest event behind each one.

A served value is only as good as the events it was computed from. A lookup that also returns,
per feature, when its newest input became available lets serving log it and monitoring alert
when a feature goes stale (an ingester that stopped, a source that went quiet) -- while the value
itself still looks plausible.

"Behind" a value, for a lookup at ``t``:

- :class:`~loopml.features.Aggregate`: the newest event in the window ``(t - window, t]`` with a
  non-missing input (any event, for a plain ``count``): the events the value is computed from.
  An empty window (count 0, other aggregates missing) has none.
- :class:`~loopml.features.Latest`: the newest value available at ``t``, even one older than
  ``max_age`` (the value is then missing, and its age says why). None if nothing is available yet.

These are read from the same state as the values (:func:`available_at` mirrors
:func:`~loopml.features.online.value_at`), so the times are exactly those of the events used.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from loopml.features.definitions import Aggregate, Feature, Latest
from loopml.timeutil import duration_us

if TYPE_CHECKING:
    from loopml.features.online import GroupState

__all__ = ["FeatureLookup", "available_at"]


@dataclass(frozen=True)
class FeatureLookup:
    """One lookup's values and, per stored feature, when its newest input became available.

    Attributes
    ----------
    values
        Exactly what :meth:`OnlineExecutor.get <loopml.features.OnlineExecutor.get>` returns.
    available_at
        Stored feature name -> available time (UTC) of the newest event behind its value, or None
        when there is none (see the module docstring). Request features are not in it.
    at
        The lookup time ``t``.
    """

    values: dict[str, Any]
    available_at: dict[str, datetime | None]
    at: datetime

    def ages(self) -> dict[str, timedelta | None]:
        """Per stored feature, ``at`` minus its ``available_at`` (None where that is None)."""
        return {n: None if a is None else self.at - a for n, a in self.available_at.items()}


def available_at(f: Feature, st: GroupState | None, t_us: int) -> int | None:
    """Available time (us) of the newest event behind stored feature ``f``'s value at ``t_us``; None if none."""
    if st is None:
        return None
    if isinstance(f, Latest):
        entry = st.latest.get(f.column)
        return None if entry is None or entry[0] > t_us else int(entry[0])
    if not isinstance(f, Aggregate):
        raise TypeError(f"not a stored feature: {f!r}")
    ts = st.ts
    hi = bisect.bisect_right(ts, t_us)
    lo = bisect.bisect_right(ts, t_us - duration_us(f.window), 0, hi)
    if hi == lo:
        return None
    if f.column is None:
        return ts[hi - 1]
    if f.agg == "approx_distinct":
        tokens = st.items[f.column]
        newest = next((i for i in range(hi - 1, lo - 1, -1) if tokens[i] is not None), None)
        return None if newest is None else ts[newest]
    valid = st.valid[f.column]  # running count of non-missing values: it steps up at each one
    last = valid[hi - 1]
    if last == (valid[lo - 1] if lo else 0):
        return None
    return ts[bisect.bisect_left(valid, last, lo, hi)]
