"""Binary classification metrics (scikit-learn's implementations, clipped probabilities)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

__all__ = ["binary_metrics", "compare"]


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """log loss, ROC AUC, Brier score, row count and positive rate; AUC is NaN with one class."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    if len(y) == 0:
        return {"n": 0, "log_loss": float("nan"), "auc": float("nan"), "brier": float("nan"), "positive_rate": float("nan")}
    both = len(np.unique(y)) == 2
    return {
        "n": len(y),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "positive_rate": float(y.mean()),
    }


def compare(y: np.ndarray, scores: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Metrics for several named score vectors on the same labels."""
    return {name: binary_metrics(y, p) for name, p in scores.items()}
