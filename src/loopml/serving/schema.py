"""Request validation against the project's declared request fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from loopml.errors import BadTimestamp, SchemaError
from loopml.timeutil import parse_time

__all__ = ["RequestSchema"]


@dataclass(frozen=True)
class RequestSchema:
    """Field name -> kind ('string', 'int', 'float', 'timestamp'), in declaration order."""

    fields: dict[str, str]

    @classmethod
    def from_arrow(cls, schema: pa.Schema, names: tuple[str, ...]) -> RequestSchema:
        kinds = {}
        for n in names:
            t = schema.field(n).type
            if pa.types.is_timestamp(t):
                kinds[n] = "timestamp"
            elif pa.types.is_integer(t):
                kinds[n] = "int"
            elif pa.types.is_floating(t):
                kinds[n] = "float"
            else:
                kinds[n] = "string"
        return cls(kinds)

    def validate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A clean request dict, or :class:`SchemaError` naming the first bad field and what was expected."""
        if not isinstance(body, Mapping):
            raise SchemaError(f"request must be a JSON object with fields {list(self.fields)}; got {type(body).__name__}")
        out: dict[str, Any] = {}
        for name, kind in self.fields.items():
            if name not in body:
                raise SchemaError(f"request field {name!r} is missing; expected {_expect(kind)}")
            out[name] = _coerce(name, kind, body[name])
        return out


def _expect(kind: str) -> str:
    return {"timestamp": "an ISO-8601 UTC timestamp such as '2013-06-15T12:00:00Z'", "int": "an integer",
            "float": "a number", "string": "a string"}[kind]


def _coerce(name: str, kind: str, value: Any) -> Any:
    if kind == "timestamp":
        if value is None:
            raise SchemaError(f"request field {name!r} is null; expected {_expect(kind)}")
        if isinstance(value, datetime):
            return parse_time(value, field=name)
        if not isinstance(value, str):
            raise BadTimestamp(f"request field {name!r} must be {_expect(kind)}; got {value!r}")
        return parse_time(value, field=name)
    if value is None:
        return None
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | float) or (isinstance(value, float) and not value.is_integer()):
            raise SchemaError(f"request field {name!r} must be {_expect(kind)}; got {value!r}")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaError(f"request field {name!r} must be {_expect(kind)}; got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise SchemaError(f"request field {name!r} must be {_expect(kind)}; got {value!r}")
    return value
