"""Baselines every model must beat."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["GroupRateBaseline", "PriorBaseline"]


class PriorBaseline:
    """Predict the positive rate of the training labels for every row."""

    def fit(self, y: np.ndarray) -> PriorBaseline:
        y = np.asarray(y, dtype=float)
        if len(y) == 0:
            raise ValueError("PriorBaseline.fit needs at least one label")
        self.rate_ = float(y.mean())
        return self

    def predict(self, n: int) -> np.ndarray:
        return np.full(n, self.rate_)

    def to_record(self) -> dict[str, Any]:
        """The fitted baseline as JSON (stored with a model version: see :meth:`from_record`)."""
        return {"rate": self.rate_}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PriorBaseline:
        out = cls()
        out.rate_ = float(record["rate"])
        return out


class GroupRateBaseline:
    """Predict each group's historical positive rate, shrunk towards the prior.

    rate(g) = (positives_g + m * prior) / (n_g + m); unseen groups get the prior.

    Parameters
    ----------
    column
        The grouping column (e.g. ``carrier``).
    m
        Pseudo-count of the shrinkage towards the prior.
    """

    def __init__(self, column: str, *, m: float = 20.0) -> None:
        self.column = column
        self.m = m

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> GroupRateBaseline:
        y = pd.Series(np.asarray(y, dtype=float), index=frame.index)
        self.prior_ = float(y.mean())
        g = y.groupby(frame[self.column].astype(object))
        rates = (g.sum() + self.m * self.prior_) / (g.count() + self.m)
        self.rates_ = {k: float(v) for k, v in rates.items()}
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.column].astype(object).map(self.rates_).fillna(self.prior_).astype(float).to_numpy()

    def to_record(self) -> dict[str, Any]:
        """The fitted baseline as JSON: its column, pseudo-count, prior and per-group rates (text keys)."""
        if not all(isinstance(k, str) for k in self.rates_):
            raise TypeError(f"GroupRateBaseline.to_record needs text group values in {self.column!r}; "
                            f"got {sorted({type(k).__name__ for k in self.rates_})}")
        return {"column": self.column, "m": self.m, "prior": self.prior_, "rates": dict(self.rates_)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> GroupRateBaseline:
        out = cls(record["column"], m=float(record["m"]))
        out.prior_ = float(record["prior"])
        out.rates_ = {str(k): float(v) for k, v in record["rates"].items()}
        return out
