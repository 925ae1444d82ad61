"""Promotion gates: the policy a version must pass before it serves, declared in the project file.

A project sets ``gates=Gates(max_ece=0.03, ...)`` (or a plain mapping with the same names); the loop
and ``loopml models promote`` evaluate the version on a window and call :func:`check_gates` with the
numbers, which returns one record per gate (name, value, threshold, passed) to store in the registry.

Examples
--------
>>> Gates.coerce({"max_ece": 0.05}).max_ece
0.05
>>> [g["gate"] for g in check_gates(Gates(), log_loss=0.5, prior_log_loss=0.55, ece=0.01)]
['ece', 'beats_prior_baseline']
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loopml.errors import InvalidConfig, closest

__all__ = ["Gates", "check_gates"]


@dataclass(frozen=True)
class Gates:
    """What a candidate must show to become champion.

    Parameters
    ----------
    max_log_loss_increase
        The candidate's log loss may exceed the champion's by at most this (nats) on the window.
    max_ece
        Largest allowed expected calibration error (10 equal-width bins).
    min_slice_support, max_slice_worse
        No slice with at least ``min_slice_support`` rows may have a log loss worse than the
        champion's on that slice by more than ``max_slice_worse`` (nats).
    require_behaviour
        Every behavioural test declared in the project must pass.
    require_no_leakage
        The leakage checks must find nothing.
    must_beat_prior
        The candidate's log loss must be below the prior-rate baseline's.
    """

    max_log_loss_increase: float = 0.0
    max_ece: float = 0.03
    min_slice_support: int = 500
    max_slice_worse: float = 0.02
    require_behaviour: bool = True
    require_no_leakage: bool = True
    must_beat_prior: bool = True

    def __post_init__(self) -> None:
        for name in ("max_log_loss_increase", "max_ece", "max_slice_worse"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InvalidConfig(f"Gates.{name} must be a finite number >= 0; got {v!r}")
        s = self.min_slice_support
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise InvalidConfig(f"Gates.min_slice_support must be a positive integer; got {s!r}")
        for name in ("require_behaviour", "require_no_leakage", "must_beat_prior"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidConfig(f"Gates.{name} must be True or False; got {getattr(self, name)!r}")

    @classmethod
    def coerce(cls, value: Gates | Mapping[str, Any] | None) -> Gates:
        """A :class:`Gates` from itself, a mapping of its field names (unknown names are errors) or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise InvalidConfig(f"gates must be a loopml Gates(...) or a mapping of its fields; got {type(value).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in value:
            if key not in names:
                raise InvalidConfig(f"gates: unknown gate setting {key!r}. Closest matches: {closest(str(key), names)}; "
                                    f"settings are {names}")
        return cls(**dict(value))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_gates(gates: Gates, *, log_loss: float, prior_log_loss: float, ece: float,
                behaviour: Sequence[Mapping[str, Any]] = (), leakage: Mapping[str, Any] | None = None,
                champion_log_loss: float | None = None, champion_ece: float | None = None,
                slices_worse: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One record per applicable gate: ``{"gate", "value", "threshold", "passed"}`` (plus ``"slices"``).

    The champion gates apply only when a champion's numbers are given (a first version has none).
    With ``champion_ece`` (the champion's ECE on the same rows) the ECE threshold is the larger of
    ``max_ece`` and the champion's: a challenger calibrated no worse than what already serves is not
    held back by it (on a week's holdout, ECE is noisy and drift lifts every model's).
    """
    limit = gates.max_ece if champion_ece is None else max(gates.max_ece, float(champion_ece))
    out = [{"gate": "ece", "value": float(ece), "threshold": limit, "passed": bool(ece <= limit)}]
    if gates.must_beat_prior:
        out.append({"gate": "beats_prior_baseline", "value": float(log_loss), "threshold": float(prior_log_loss),
                    "passed": bool(log_loss < prior_log_loss)})
    if gates.require_behaviour and behaviour:
        failed = [b["name"] for b in behaviour if not b["passed"]]
        out.append({"gate": "behavioural_tests", "value": len(failed), "threshold": 0, "passed": not failed,
                    "failed": failed})
    if gates.require_no_leakage and leakage is not None:
        out.append({"gate": "no_leakage", "value": len(leakage["findings"]), "threshold": 0,
                    "passed": bool(leakage["passed"])})
    if champion_log_loss is not None:
        limit = champion_log_loss + gates.max_log_loss_increase
        out.append({"gate": "log_loss_vs_champion", "value": float(log_loss), "threshold": float(limit),
                    "passed": bool(log_loss <= limit)})
    if slices_worse is not None:
        out.append({"gate": "no_slice_worse_than_champion", "value": len(slices_worse), "threshold": 0,
                    "passed": not slices_worse, "slices": list(slices_worse)})
    return out
