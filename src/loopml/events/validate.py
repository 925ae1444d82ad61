"""Validation at ingestion: declared types, ranges and allowed values per source.

A streamed event that breaks its source's declaration is not coerced and not dropped silently: the
consumer sets it aside in the quarantine (with the reason) and counts it. Two kinds of rule apply:

- declared ones, a :class:`SourceSchema` per source (``Column("dep_delay", "float", min=-120)``);
- implied ones, from the feature definitions that read the source: a column aggregated into a window
  or read by a float :class:`~loopml.features.Latest` must be numeric (or missing), and an entity key
  must be a scalar -- otherwise the online state could not use the event.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loopml.errors import InvalidConfig

__all__ = ["Column", "SourceSchema", "Validator"]

_TYPES = ("float", "int", "str", "bool")


@dataclass(frozen=True)
class Column:
    """One declared column: its type, whether it may be missing, its range or its allowed values.

    Examples
    --------
    >>> Column("dep_delay", "float", min=-120, max=1500).check(2000.0)
    'dep_delay = 2000.0 is above the maximum 1500'
    >>> Column("origin", "str", allowed=("EWR", "JFK", "LGA")).check("EWR") is None
    True
    """

    name: str
    dtype: str = "float"
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in _TYPES:
            raise InvalidConfig(f"Column {self.name!r}: dtype must be one of {list(_TYPES)}; got {self.dtype!r}")
        if self.allowed is not None:
            object.__setattr__(self, "allowed", tuple(self.allowed))

    def check(self, value: Any) -> str | None:
        """None if ``value`` is acceptable, else the reason (naming the column and the value)."""
        if value is None:
            return None if self.nullable else f"{self.name} is missing and the column is declared not nullable"
        t = type(value)
        if self.dtype == "float":
            if t is not float and t is not int:
                return f"{self.name} must be a number; got {t.__name__} {value!r}"
            if t is float and not math.isfinite(value) and not (value != value and self.nullable):
                return f"{self.name} = {value!r} is not a finite number"
        elif self.dtype == "int" and t is not int:
            return f"{self.name} must be an integer; got {t.__name__} {value!r}"
        elif self.dtype == "str" and t is not str:
            return f"{self.name} must be a string; got {t.__name__} {value!r}"
        elif self.dtype == "bool" and t is not bool:
            return f"{self.name} must be true or false; got {t.__name__} {value!r}"
        if self.min is not None and value < self.min:
            return f"{self.name} = {value!r} is below the minimum {self.min!r}"
        if self.max is not None and value > self.max:
            return f"{self.name} = {value!r} is above the maximum {self.max!r}"
        if self.allowed is not None and value not in self.allowed:
            return f"{self.name} = {value!r} is not one of the allowed values {list(self.allowed)}"
        return None


@dataclass(frozen=True)
class SourceSchema:
    """The declared columns of one source. Undeclared columns pass through unchecked."""

    source: str
    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidConfig(f"SourceSchema {self.source!r}: columns declared twice: {dupes}")


class Validator:
    """Per-source checks, compiled once: declared schemas plus what the features need.

    Parameters
    ----------
    features
        The feature definitions the consumer feeds (implied rules).
    schemas
        Declared :class:`SourceSchema` objects.
    """

    def __init__(self, features: Iterable[Any] = (), schemas: Sequence[SourceSchema] = ()) -> None:
        from loopml.features.definitions import Aggregate, Latest, RequestFeature

        checks: dict[str, dict[str, Column]] = {}
        for f in features:
            if isinstance(f, RequestFeature):
                continue
            cols = checks.setdefault(f.source, {})
            for k in f.keys:
                cols.setdefault(k, _Key(k))
            # approx_distinct counts any values (strings too); every other aggregation needs numbers
            numeric = ((isinstance(f, Aggregate) and f.column is not None and f.agg != "approx_distinct")
                       or (isinstance(f, Latest) and f.dtype == "float"))
            if numeric:
                cols[f.column] = Column(f.column, "float")
        for schema in schemas:
            cols = checks.setdefault(schema.source, {})
            for c in schema.columns:
                cols[c.name] = c  # the declaration replaces the implied rule for that column
        self.checks: dict[str, tuple[Column, ...]] = {s: tuple(c.values()) for s, c in checks.items()}
        # fast path (one type test per column per event): plain numbers and keys; the rest go through Column.check
        self._plan: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[Column, ...]]] = {}
        for source, cols in self.checks.items():
            keys = tuple(c.name for c in cols if isinstance(c, _Key))
            plain = tuple(c.name for c in cols if type(c) is Column and c.dtype == "float" and c.nullable
                          and c.min is None and c.max is None and c.allowed is None)
            rest = tuple(c for c in cols if c.name not in keys and c.name not in plain)
            self._plan[source] = (keys, plain, rest)

    def check(self, source: str, event: Mapping[str, Any]) -> str | None:
        """None if the event of ``source`` passes every rule, else the first reason."""
        plan = self._plan.get(source)
        if plan is None:
            return None
        keys, plain, rest = plan
        get = event.get
        for c in plain:
            v = get(c)
            t = type(v)
            # a finite float or an int (not bool) passes here; nan/inf and everything else get the full check
            if not ((t is float and v - v == 0.0) or t is int or v is None):
                return self._full(source, event)
        for c in keys:
            if type(get(c)) not in _SCALARS:
                return self._full(source, event)
        for col in rest:
            reason = col.check(get(col.name))
            if reason is not None:
                return f"source {source!r}: {reason}"
        return None

    def check_columns(self, source: str, columns: Mapping[str, list[Any]], events: Sequence[Mapping[str, Any]]) -> bool:
        """True if every event of ``source`` passes (``columns``: name -> values, as far as built; else read
        from ``events``). A quick column-wise pass; on False, :meth:`check` each event for the reason."""
        plan = self._plan.get(source)
        if plan is None:
            return True
        keys, plain, rest = plan
        for c in plain:
            col = columns[c] if c in columns else [e.get(c) for e in events]
            types = set(map(type, col))
            if not types <= _NUMBERS:
                return False
            # sum of the non-zero values: not finite iff some value is nan or inf (or the sum overflows:
            # then the event-wise check clears them)
            if float in types and not math.isfinite(sum(filter(None, col))):
                return False
        for c in keys:
            col = columns[c] if c in columns else [e.get(c) for e in events]
            if not set(map(type, col)) <= _SCALARS:
                return False
        for rule in rest:
            check = rule.check
            col = columns[rule.name] if rule.name in columns else [e.get(rule.name) for e in events]
            if any(check(v) is not None for v in col):
                return False
        return True

    def _full(self, source: str, event: Mapping[str, Any]) -> str | None:
        for col in self.checks.get(source, ()):
            reason = col.check(event.get(col.name))
            if reason is not None:
                return f"source {source!r}: {reason}"
        return None


_SCALARS = frozenset({str, int, float, bool, type(None)})
_NUMBERS = frozenset({int, float, type(None)})


class _Key(Column):
    """An entity key: any JSON scalar (a string, number or boolean), or missing (the event then has no entity)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "str")

    def check(self, value: Any) -> str | None:
        if type(value) in _SCALARS:
            return None
        return f"entity key {self.name} must be a scalar; got {type(value).__name__} {value!r}"
