"""Feature declarations: what a feature means, independent of how it is computed.

A definition is data (a frozen dataclass). The offline executor compiles it to DuckDB SQL; the
online executor keeps incremental state for it. Both read the same fields, so they cannot drift
apart silently, and a property test checks that they agree value for value.

Time semantics, shared by both executors, for a prediction at time ``t``:

- :class:`Aggregate` over ``window`` uses the events of ``source`` whose *available* time is in
  ``(t - window, t]``; ``count`` and ``approx_distinct`` are 0 when there are none, every other
  aggregate is missing. Missing input values are ignored (as SQL aggregates do). Events are ordered
  by (available time, event time, event id), the log's order: ``last`` is the last non-missing value
  in that order and ``last_k`` the ``k`` last, newest first. ``approx_distinct`` is an Apache
  DataSketches HLL estimate (``lg_k``) and ``approx_quantile`` a KLL estimate (``kll_k``) of the
  ``quantile`` (smallest value whose inclusive rank reaches it), see :mod:`loopml.features.sketches`.
- :class:`Latest` is the most recently available non-missing value of ``column`` with available time
  ``<= t`` (ties broken by event time, then event id); missing if there is none or, with
  ``max_age``, if that value's *event* time is older than ``t - max_age``. A static table (planes)
  is a source whose rows are available from the epoch: a plain lookup is a ``Latest``.
- :class:`RequestFeature` is a pure function of the request's own fields (known at ``t`` by
  construction), evaluated row by row in both executors.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from loopml.errors import InvalidConfig

__all__ = [
    "AGGREGATIONS",
    "Aggregate",
    "Feature",
    "Label",
    "Latest",
    "RequestFeature",
    "Spine",
    "changed_features",
    "definition_hash",
    "describe",
    "feature_versions",
]

AGGREGATIONS = ("count", "sum", "mean", "min", "max", "std", "last", "last_k", "approx_distinct", "approx_quantile")
Agg = Literal["count", "sum", "mean", "min", "max", "std", "last", "last_k", "approx_distinct", "approx_quantile"]

# parameter -> (the aggregation it belongs to, default, valid range); a parameter of another
# aggregation is an error, so a definition never carries a value that means nothing
_PARAMS: dict[str, tuple[str, int | float | None, tuple[float, float]]] = {
    "k": ("last_k", None, (1, 10_000)),
    "quantile": ("approx_quantile", None, (0.0, 1.0)),
    "kll_k": ("approx_quantile", 200, (8, 65_535)),      # KLL's own limits
    "lg_k": ("approx_distinct", 12, (4, 21)),            # HLL's own limits
}


def _keys(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class Aggregate:
    """A windowed aggregate of ``column`` over events of ``source`` sharing ``keys``."""

    name: str
    source: str
    keys: tuple[str, ...]
    agg: Agg
    window: timedelta
    column: str | None = None
    description: str = ""
    k: int | None = None
    quantile: float | None = None
    kll_k: int | None = None
    lg_k: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", _keys(self.keys))
        if self.agg not in AGGREGATIONS:
            raise InvalidConfig(f"Feature {self.name!r}: agg must be one of {AGGREGATIONS}; got {self.agg!r}")
        for param, (agg, default, (lo, hi)) in _PARAMS.items():
            value = getattr(self, param)
            if agg != self.agg:
                if value is not None:
                    raise InvalidConfig(f"Feature {self.name!r}: {param} applies only to agg {agg!r}; "
                                        f"got {param}={value!r} with agg {self.agg!r}")
                continue
            if value is None:
                if default is None:
                    raise InvalidConfig(f"Feature {self.name!r}: agg {agg!r} needs {param} (in [{lo}, {hi}])")
                object.__setattr__(self, param, value := default)
            integral = isinstance(lo, int)
            if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)) \
                    or not lo <= value <= hi:
                kind = "an integer" if integral else "a number"
                raise InvalidConfig(f"Feature {self.name!r}: {param} must be {kind} in [{lo}, {hi}]; got {value!r}")
        if not isinstance(self.window, timedelta) or self.window <= timedelta(0):
            raise InvalidConfig(f"Feature {self.name!r}: window must be a positive timedelta; got {self.window!r}")
        if self.window % timedelta(microseconds=1):
            raise InvalidConfig(f"Feature {self.name!r}: window must be a whole number of microseconds")
        if self.column is None and self.agg != "count":
            raise InvalidConfig(f"Feature {self.name!r}: agg {self.agg!r} needs a column")

    @property
    def dtype(self) -> str:
        """'list' for ``last_k`` (a list of floats, newest first), 'float' otherwise."""
        return "list" if self.agg == "last_k" else "float"


@dataclass(frozen=True)
class Latest:
    """The latest available non-missing value of ``column`` for ``keys`` (optionally no older than ``max_age``)."""

    name: str
    source: str
    keys: tuple[str, ...]
    column: str
    max_age: timedelta | None = None
    dtype: str = "float"
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", _keys(self.keys))
        if self.max_age is not None and self.max_age < timedelta(0):
            raise InvalidConfig(f"Feature {self.name!r}: max_age must be >= 0; got {self.max_age!r}")
        if self.dtype not in ("float", "str"):
            raise InvalidConfig(f"Feature {self.name!r}: dtype must be 'float' or 'str'; got {self.dtype!r}")


@dataclass(frozen=True)
class RequestFeature:
    """A value computed from the request's own fields by ``fn(row) -> value``.

    ``inputs`` lists the request fields ``fn`` reads; ``dtype`` is 'float' or 'category'.
    """

    name: str
    fn: Callable[[Mapping[str, Any]], Any]
    inputs: tuple[str, ...]
    dtype: str = "float"
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _keys(self.inputs))
        if self.dtype not in ("float", "category"):
            raise InvalidConfig(f"Feature {self.name!r}: dtype must be 'float' or 'category'; got {self.dtype!r}")


Feature = Aggregate | Latest | RequestFeature


@dataclass(frozen=True)
class Spine:
    """Where prediction rows come from: one row per event of ``source``.

    The prediction time is ``time_column - lead``; date ranges select on ``time_column``.
    ``request_fields`` are the columns a live request carries.
    """

    source: str
    id: str
    time_column: str
    lead: timedelta
    request_fields: tuple[str, ...]
    carry: tuple[str, ...] = ()


@dataclass(frozen=True)
class Label:
    """The label: ``column`` of the ``source`` event whose ``id`` matches the spine row's id.

    The label is known from that event's available time on, never before.
    """

    name: str
    source: str
    id: str
    column: str


def _describe(f: Feature) -> dict[str, Any]:
    if isinstance(f, RequestFeature):
        try:
            code = inspect.getsource(f.fn)
        except (OSError, TypeError):
            code = getattr(f.fn, "__qualname__", repr(f.fn))
        return {"kind": "request", "name": f.name, "inputs": list(f.inputs), "dtype": f.dtype, "code": code}
    d: dict[str, Any] = {"kind": type(f).__name__.lower()}
    for k, v in f.__dict__.items():
        # unset aggregation parameters are left out, so definitions that predate them keep their hash
        if k == "description" or (k in _PARAMS and v is None):
            continue
        d[k] = v.total_seconds() if isinstance(v, timedelta) else (list(v) if isinstance(v, tuple) else v)
    return d


def describe(f: Feature) -> dict[str, Any]:
    """A JSON-able description of one feature's definition (what its version hash covers)."""
    return json.loads(json.dumps(_describe(f), sort_keys=True, default=str))


def feature_versions(features: tuple[Feature, ...] | list[Feature]) -> dict[str, str]:
    """``{name: 12-hex sha256 of its definition}``: a feature's identity, recorded with every model version.

    Changing a window, a source, a key or a column gives the feature a new version; the registry
    keeps the versions a model was trained with, so serving can refuse a model whose features have
    since been redefined (see :func:`changed_features`).
    """
    return {f.name: hashlib.sha256(json.dumps(_describe(f), sort_keys=True, default=str).encode()).hexdigest()[:12]
            for f in features}


def changed_features(recorded: dict[str, str], features: tuple[Feature, ...] | list[Feature]) -> dict[str, str]:
    """Features of ``recorded`` (a model's :func:`feature_versions`) that ``features`` define differently or not at all.

    Returns ``{name: "redefined" | "removed"}``; empty when the model can be served with ``features``.
    """
    current = feature_versions(features)
    out = {}
    for name, version in recorded.items():
        if name not in current:
            out[name] = "removed"
        elif current[name] != version:
            out[name] = "redefined"
    return out


def definition_hash(features: tuple[Feature, ...] | list[Feature]) -> str:
    """sha256 of the features' definitions (order-insensitive), recorded with every model version."""
    payload = json.dumps(sorted((_describe(f) for f in features), key=lambda d: d["name"]), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
