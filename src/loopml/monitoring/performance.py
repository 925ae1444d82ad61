"""Delayed-label performance over the prediction log."""

from __future__ import annotations

from typing import Any

import pandas as pd

from loopml.evaluation.metrics import binary_metrics

__all__ = ["performance_by_version"]


def performance_by_version(joined: pd.DataFrame) -> dict[str, Any]:
    """Per model version: predictions, labelled, log loss, AUC, Brier, median label delay."""
    rows = []
    for version, g in joined.groupby("model_version", sort=True):
        lab = g[g["label"].notna()]
        m = binary_metrics(lab["label"].to_numpy(float), lab["score"].to_numpy(float))
        delay = (pd.to_datetime(lab["label_time"], utc=True) - pd.to_datetime(lab["at"], utc=True)).median() if len(lab) else None
        rows.append({"model_version": int(version), "predictions": len(g), "labelled": len(lab),
                     "log_loss": m["log_loss"], "auc": m["auc"], "brier": m["brier"],
                     "median_label_delay": str(delay) if delay is not None else None})
    lab = joined[joined["label"].notna()]
    overall = binary_metrics(lab["label"].to_numpy(float), lab["score"].to_numpy(float))
    return {"versions": rows, "overall": {**overall, "predictions": len(joined), "labelled": len(lab)}}
