"""Retraining policies: when the loop checks, what fires a retraining, and how it trains.

Kept apart from the controller so that a project file can declare one without importing the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from loopml.errors import InvalidConfig

__all__ = ["RetrainPolicy"]


@dataclass(frozen=True)
class RetrainPolicy:
    """When and how to retrain, and how a challenger earns promotion.

    Parameters
    ----------
    cadence
        How often the controller checks: ``"monthly"`` (first of the month, UTC), ``"weekly"``
        (Mondays) or ``"never"`` (a static model).
    mode
        ``"stateless"``: train a new model on the trailing ``train_window``. ``"stateful"``:
        continue boosting the champion (LightGBM ``init_model``) with ``stateful_rounds`` trees on
        the data since its last training window, i.e. ``[t - cadence - holdout, t - holdout)``.
    trigger
        ``"schedule"``: retrain at every check. ``"performance"``: retrain only when the log loss of
        the last 7 days' labelled predictions exceeds that of the 28 days before by more than
        ``performance_threshold`` (relative), with at least ``min_holdout_labels`` labels.
        ``"drift"``: retrain only when the features served in the last 7 days drifted from the
        champion's training window (per-feature tests, Benjamini-Hochberg at ``drift_alpha``, with
        effect-size floors so that a large window does not alarm on trivial shifts).
        ``"labels"``: retrain only once ``min_new_labels`` labels have arrived since the champion's
        label cutoff.
    train_window
        Length of the trailing training window (stateless mode).
    holdout
        The most recent part of the data, kept out of training; the challenger must beat the
        champion's log loss there (data neither has trained on) to be promoted.
    min_holdout_labels
        Below this many labelled holdout rows no promotion happens.
    label_wait
        After serving stops, how long labels of the last predictions are still collected.
    drift_alpha, min_new_labels
        Settings of the ``"drift"`` and ``"labels"`` triggers.

    A project declares its policy with ``Project(policy=RetrainPolicy(...))`` or a preset name
    (:meth:`named`); ``loopml replay/run/demo --policy NAME`` overrides it.
    """

    cadence: str = "monthly"
    mode: str = "stateless"
    trigger: str = "schedule"
    train_window: timedelta = timedelta(days=59)
    holdout: timedelta = timedelta(days=7)
    stateful_rounds: int = 60
    performance_threshold: float = 0.05
    min_holdout_labels: int = 1000
    label_wait: timedelta = timedelta(days=2)
    drift_alpha: float = 0.01
    min_new_labels: int = 20_000

    def __post_init__(self) -> None:
        for name, value, allowed in (("cadence", self.cadence, ("monthly", "weekly", "never")),
                                     ("mode", self.mode, ("stateless", "stateful")),
                                     ("trigger", self.trigger, ("schedule", "performance", "drift", "labels"))):
            if value not in allowed:
                raise InvalidConfig(f"RetrainPolicy.{name} must be one of {allowed}; got {value!r}")

    @property
    def period(self) -> timedelta:
        return timedelta(days=7) if self.cadence == "weekly" else timedelta(days=30)

    @classmethod
    def named(cls, name: str) -> RetrainPolicy:
        """The policies of the 2013 experiment: static, monthly, weekly-stateful, triggered."""
        presets = {
            "static": cls(cadence="never"),
            "monthly": cls(cadence="monthly"),
            "weekly-stateful": cls(cadence="weekly", mode="stateful"),
            "triggered": cls(cadence="weekly", trigger="performance"),
        }
        if name not in presets:
            raise InvalidConfig(f"policy must be one of {sorted(presets)}; got {name!r}")
        return presets[name]

    @classmethod
    def coerce(cls, value: RetrainPolicy | str | None) -> RetrainPolicy:
        """A policy from itself, a preset name, or None (the default: monthly stateless retraining)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls.named(value)
        raise InvalidConfig(f"policy must be a RetrainPolicy(...) or one of 'static', 'monthly', 'weekly-stateful', "
                            f"'triggered'; got {type(value).__name__}")
