"""Recalibration at training time, stored with the model and applied wherever it scores.

With ``Project(calibration=Calibration(...))`` the last ``fraction`` of the training window (by
prediction time) is held out of boosting. Each candidate recalibrator (identity, Platt, isotonic) is
fitted on the first half of that held-out window and judged by log loss on the second half; the
winner is refitted on the whole held-out window and stored in the model artifact, so batch scoring,
evaluation and online serving all return the same calibrated probability. Identity wins unless
recalibrating helps on later data, so a well-calibrated model is left alone (at the price of the
held-out rows, which is why calibration is opt-in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from loopml.errors import InvalidConfig

__all__ = ["Calibration", "fit_calibrator", "split_for_calibration"]

_CANDIDATES = ("identity", "platt", "isotonic")


@dataclass(frozen=True)
class Calibration:
    """How a project recalibrates its models.

    Parameters
    ----------
    fraction
        Share of the training window's time span, at its end, held out of boosting to fit the
        calibrator (0 < fraction < 0.5).
    candidates
        Calibrators to choose from by validation log loss; on a tie the earlier wins.
    min_rows
        Below this many labelled held-out rows no calibrator is fitted (identity is stored).
    """

    fraction: float = 0.2
    candidates: tuple[str, ...] = _CANDIDATES
    min_rows: int = 1000

    def __post_init__(self) -> None:
        f = self.fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0 < f < 0.5:
            raise InvalidConfig(f"Calibration.fraction must be a number in (0, 0.5); got {f!r}")
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if not self.candidates:
            raise InvalidConfig(f"Calibration.candidates must name at least one of {list(_CANDIDATES)}")
        for c in self.candidates:
            if c not in _CANDIDATES:
                raise InvalidConfig(f"Calibration.candidates: unknown calibrator {c!r}; choose from {list(_CANDIDATES)}")
        if isinstance(self.min_rows, bool) or not isinstance(self.min_rows, int) or self.min_rows < 2:
            raise InvalidConfig(f"Calibration.min_rows must be an integer >= 2; got {self.min_rows!r}")


def split_for_calibration(frame: pd.DataFrame, fraction: float, *, time_column: str = "prediction_time"
                          ) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    """(rows to boost on, held-out rows, boundary time): the held-out part is the last ``fraction`` of the span."""
    if len(frame) == 0:
        return frame, frame, None
    t = frame[time_column]
    lo, hi = t.min(), t.max()
    boundary = hi - (hi - lo) * fraction
    return frame[t < boundary], frame[t >= boundary], boundary


def fit_calibrator(raw: np.ndarray, y: np.ndarray, times: pd.Series, settings: Calibration) -> dict[str, Any]:
    """Choose and fit a calibrator on held-out ``raw`` scores; returns the record stored in the model."""
    from loopml.evaluation.calibration import IdentityCalibrator, choose_calibrator

    order = np.argsort(times.to_numpy(), kind="stable")
    raw, y = np.asarray(raw, dtype=float)[order], np.asarray(y, dtype=float)[order]
    n = len(y)
    if n < settings.min_rows or len(np.unique(y)) < 2:
        return {"kind": "identity", "chosen_from": [], "held_out_rows": int(n),
                "reason": f"only {n} labelled held-out rows (min_rows={settings.min_rows}) or a single class",
                "params": IdentityCalibrator().fit(raw, y).to_dict()}
    half = n // 2
    name, winner, losses = choose_calibrator(y[:half], raw[:half], y[half:], raw[half:],
                                             candidates=settings.candidates)
    params = type(winner)().fit(raw, y).to_dict()  # the chosen kind, refitted on the whole held-out window
    return {"kind": name, "chosen_from": list(settings.candidates), "validation_log_loss": losses,
            "held_out_rows": int(n), "params": params}
