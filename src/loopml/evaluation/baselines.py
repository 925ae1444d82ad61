"""Baselines every model must beat."""

from __future__ import annotations

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
