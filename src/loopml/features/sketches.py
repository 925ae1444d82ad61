"""Approximate aggregates with Apache DataSketches: HLL distinct counts and KLL quantiles.

Both executors call these functions on the same window values in the same (log) order, so they
answer identically whenever the sketch itself is deterministic:

- **HLL** (``approx_distinct``) is deterministic, and :func:`distinct_estimate` makes it independent
  of the order and grouping of the values too: it reads the estimate through an ``hll_union`` that
  has merged the sketch with itself, which switches DataSketches to its composite estimator, a
  function of the registers (the *set* of hashed values) alone. A sketch directly updated uses the
  HIP estimator, which depends on arrival order. So per-event, per-tile or per-window sketches of
  the same values merge to the same answer. Relative standard error about ``1.04 / sqrt(2**lg_k)``
  (1.6% at the default ``lg_k=12``); :func:`distinct_error` gives DataSketches' own bound.
- **KLL** (``approx_quantile``) is exact while the window holds at most ``kll_k`` values (the sketch
  keeps every value; the answer is the exact inverted-CDF quantile). Beyond that KLL compacts with a
  random bit drawn from an RNG that datasketches seeds per process and does not let Python seed, so
  two builds of the same values can differ: both stay within KLL's normalised rank error
  (:func:`quantile_rank_error`, 1.3% at the default ``kll_k=200``, 99% confidence) of the exact
  answer, but offline and online agree exactly only in the exact regime. (DataSketches' t-digest is
  deterministic but has no proven error bound; KLL was asked for.)

Values are hashed by a canonical text :func:`token`, so ``1``, ``1.0`` and ``numpy.int64(1)`` are one
value whichever executor read them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import datasketches as ds
import numpy as np

__all__ = ["distinct_error", "distinct_estimate", "quantile_estimate", "quantile_rank_error", "token"]


def token(value: Any) -> str | None:
    """The canonical text of a value for hashing (None for missing)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return None
        return str(int(v)) if v.is_integer() else repr(v)
    return str(value)


def distinct_estimate(tokens: Iterable[str], lg_k: int) -> float:
    """HLL estimate of the number of distinct tokens (order- and grouping-independent)."""
    sketch = ds.hll_sketch(lg_k, ds.tgt_hll_type.HLL_8)
    for t in tokens:
        sketch.update(t)
    union = ds.hll_union(lg_k)
    union.update(sketch)
    # merging the sketch into itself marks the union out of order: its estimate is then the
    # composite one, computed from the registers only (see the module docstring)
    union.update(union.get_result(ds.tgt_hll_type.HLL_8))
    return float(union.get_estimate())


def distinct_error(lg_k: int, num_std_devs: int = 2) -> float:
    """DataSketches' a-priori relative error bound of a unioned HLL sketch (upper side)."""
    return abs(float(ds.hll_sketch.get_rel_err(True, True, lg_k, num_std_devs)))


def quantile_estimate(values: Sequence[float], quantile: float, kll_k: int) -> float:
    """KLL estimate of the ``quantile`` of ``values``: the smallest retained value whose inclusive rank reaches it."""
    sketch = ds.kll_doubles_sketch(kll_k)
    sketch.update(np.asarray(values, dtype=np.float64))
    return float(sketch.get_quantile(quantile, True))


def quantile_rank_error(kll_k: int) -> float:
    """KLL's single-sided normalised rank error for ``kll_k`` (99% confidence, DataSketches' constants)."""
    return float(ds.kll_doubles_sketch(kll_k).normalized_rank_error(False))
