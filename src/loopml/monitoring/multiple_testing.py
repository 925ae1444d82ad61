"""Adjusting p-values for testing many columns at once.

Checking 60 columns at ``alpha = 0.05`` without a correction raises a false alarm on some column in
most windows even when nothing moved. :func:`adjust_p_values` turns the raw p-values into adjusted
ones that can be compared with ``alpha`` directly:

``"bh"`` (Benjamini-Hochberg, the default)
    Controls the false discovery rate: among the columns flagged, the expected share that did not
    really drift is at most ``alpha`` (for independent or positively dependent tests). When no
    column drifted this is the same as the chance of any false alarm. Computed by
    :func:`scipy.stats.false_discovery_control`.
``"bonferroni"``
    Controls the family-wise error rate under any dependence: ``min(1, p * m)`` for ``m`` tests.
    Stricter, so it misses more real drift.
``"none"``
    The raw p-values, one test at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from loopml.errors import InvalidConfig

__all__ = ["CORRECTIONS", "adjust_p_values", "check_correction"]

CORRECTIONS = ("bh", "bonferroni", "none")


def check_correction(correction: object) -> str:
    """Return ``correction`` if it names a known method, else raise :class:`InvalidConfig`."""
    if not isinstance(correction, str) or correction not in CORRECTIONS:
        raise InvalidConfig(
            f"correction must be one of {list(CORRECTIONS)}; got {correction!r}. "
            "Use 'bh' (Benjamini-Hochberg, the default) unless you need 'bonferroni'."
        )
    return correction


def adjust_p_values(p_values: Sequence[float | None] | np.ndarray, *, method: str = "bh") -> np.ndarray:
    """Adjust p-values of several tests for multiplicity.

    Parameters
    ----------
    p_values : sequence of float or None
        One raw p-value per test. ``None`` or NaN marks a test that was not run (no data); it is
        left out of the count ``m`` and comes back as NaN.
    method : {"bh", "bonferroni", "none"}
        Benjamini-Hochberg (:func:`scipy.stats.false_discovery_control`), Bonferroni
        (``min(1, p * m)``) or no adjustment.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values, in the input order; compare them with ``alpha``.

    Raises
    ------
    InvalidConfig
        If ``method`` is unknown or a p-value lies outside [0, 1].

    Examples
    --------
    >>> adjust_p_values([0.01, 0.04, 0.5], method="bonferroni").tolist()
    [0.03, 0.12, 1.0]
    >>> adjust_p_values([0.01, 0.04, 0.5]).round(3).tolist()
    [0.03, 0.06, 0.5]
    """
    check_correction(method)
    p = np.array([np.nan if v is None else v for v in p_values], dtype=float)
    tested = ~np.isnan(p)
    bad = p[tested & ((p < 0) | (p > 1))]
    if bad.size:
        raise InvalidConfig(f"p-values must lie in [0, 1]; got {bad[0]!r}.")
    out = np.full(p.shape, np.nan)
    m = int(tested.sum())
    if m == 0:
        return out
    if method == "bh":
        out[tested] = stats.false_discovery_control(p[tested], method="bh")
    elif method == "bonferroni":
        out[tested] = np.minimum(1.0, p[tested] * m)
    else:
        out[tested] = p[tested]
    return out
