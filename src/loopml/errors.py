"""Every error loopml raises, in one tree.

Each leaf also inherits the builtin that matches its meaning, so ``except KeyError`` keeps working::

    LoopmlError
    ├── InvalidConfig (ValueError)          a project, feature or setting is wrong
    │   └── FeatureNotFound (KeyError)      an unknown feature name was asked for
    ├── EntityNotFound (KeyError)           no such entity (e.g. flight id) in the event log
    ├── SchemaError (ValueError)            a source or request lacks a column or has a bad type
    │   └── BadTimestamp                    a time value could not be parsed
    ├── EventLogError                       the event log cannot do what was asked
    ├── RegistryError                       the model registry cannot do what was asked
    │   ├── ModelNotFound (KeyError)        no such model or version or alias
    │   ├── ArtifactCorrupted               an artifact's sha256 does not match the registry
    │   └── ModelRejected                   a version failed to load or its smoke test; not served
    ├── GateFailed                          a version failed its promotion gates
    ├── PredictionLogError (OSError)        a prediction could not be made durable in the log
    └── NotReady (RuntimeError)             something needed first has not happened (no champion yet)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ArtifactCorrupted",
    "BadTimestamp",
    "EntityNotFound",
    "EventLogError",
    "FeatureNotFound",
    "GateFailed",
    "InvalidConfig",
    "LoopmlError",
    "ModelNotFound",
    "ModelRejected",
    "NotReady",
    "PredictionLogError",
    "RegistryError",
    "SchemaError",
    "closest",
]


class LoopmlError(Exception):
    """Root of every error loopml raises on purpose."""


class InvalidConfig(LoopmlError, ValueError):
    """A project, feature definition or setting is wrong."""


class FeatureNotFound(InvalidConfig, KeyError):
    """An unknown feature name was asked for."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it read as text
        return str(self.args[0]) if self.args else ""


class EntityNotFound(LoopmlError, KeyError):
    """No such entity (a flight id, say) in the event log."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SchemaError(LoopmlError, ValueError):
    """A source, table or request lacks a declared column or has the wrong type."""


class PayloadTooLarge(SchemaError):
    """A request body (as sent, or once inflated) is larger than the server's limit (HTTP 413)."""


class BadTimestamp(SchemaError):
    """A time value could not be parsed as a timestamp."""


class EventLogError(LoopmlError):
    """The event log cannot do what was asked."""


class RegistryError(LoopmlError):
    """The model registry cannot do what was asked."""


class ModelNotFound(RegistryError, KeyError):
    """No such model, version or alias."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ArtifactCorrupted(RegistryError):
    """An artifact's content does not match the sha256 the registry recorded."""


class ModelRejected(RegistryError):
    """A version failed to load or failed its smoke test, so it did not replace the serving one."""


class GateFailed(LoopmlError):
    """A version failed its promotion gates and was not promoted."""


class PredictionLogError(LoopmlError, OSError):
    """The prediction log could not write or fsync a record; the prediction was not acknowledged."""


class NotReady(LoopmlError, RuntimeError):
    """Something that must happen first has not happened yet."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Names among ``candidates`` that look like ``name``, for 'did you mean' messages."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
