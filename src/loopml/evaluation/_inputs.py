"""Input checks and per-row helpers shared by the evaluation modules, with no import beyond NumPy.

They live apart from :mod:`.calibration` (which imports SciPy and scikit-learn for its recalibrators) so that
the behavioural tests a project file declares, the bootstrap and the slices load without those libraries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopml.errors import InvalidConfig, SchemaError, closest

_EPS = 1e-7  # the clipping loopml.evaluation.metrics.binary_metrics applies before log loss
_STRATEGIES = ("uniform", "quantile")


def _binary_inputs(y: Any, p: Any, *, y_name: str = "y", p_name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    """Labels as 0.0/1.0 and scores as floats in [0, 1], both 1-D and of equal non-zero length."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    for name, a in ((y_name, y), (p_name, p)):
        if a.ndim != 1:
            raise SchemaError(f"{name} must be one-dimensional; got shape {a.shape}.")
    if len(y) != len(p):
        raise SchemaError(f"{y_name} has {len(y)} rows but {p_name} has {len(p)}; they must be aligned.")
    if len(y) == 0:
        raise SchemaError(f"{y_name} and {p_name} are empty; at least one row is needed.")
    bad = np.flatnonzero((y != 0) & (y != 1))
    if len(bad):
        raise SchemaError(f"{y_name} must hold binary labels 0/1; got {y[bad[0]].item()!r} at row {bad[0]}.")
    bad = np.flatnonzero(~((p >= 0) & (p <= 1)))  # also catches NaN
    if len(bad):
        raise SchemaError(
            f"{p_name} must be probabilities in [0, 1]; got {p[bad[0]].item()!r} at row {bad[0]}."
        )
    return y, p


def _row_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row binary log loss with the clipping ``binary_metrics`` uses."""
    pc = np.clip(p, _EPS, 1 - _EPS)
    return -(y * np.log(pc) + (1 - y) * np.log1p(-pc))


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        hint = closest(str(value), choices)
        extra = f" Did you mean {hint[0]!r}?" if hint else ""
        raise InvalidConfig(f"{name} must be one of {list(choices)}; got {value!r}.{extra}")


def _bin_ids(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Bin index of every score, exactly as ``sklearn.calibration.calibration_curve`` assigns it."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise InvalidConfig(f"n_bins must be a positive integer; got {n_bins!r}.")
    _check_choice("strategy", strategy, _STRATEGIES)
    if strategy == "quantile":
        edges = np.percentile(p, np.linspace(0, 1, n_bins + 1) * 100)
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], p)
