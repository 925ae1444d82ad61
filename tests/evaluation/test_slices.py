"""Slice metrics, the worst-slice test (with its false-positive rate simulated) and the promotion gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from scipy.stats import ttest_ind

from loopml.errors import InvalidConfig, SchemaError
from loopml.evaluation import binary_metrics, compare_slices, slice_metrics, worst_slices

COLUMNS = ["carrier", "distance", "hour"]
BANDS = {"distance": [0, 500, 1000, 2000, 5000]}


def _flights(seed: int, n: int, *, bad_carrier: str | None = None):
    """Slice attributes independent of how predictable a row is; the true probability q depends on a
    hidden feature only, and the model predicts q exactly except on ``bad_carrier``, where it is noise."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "carrier": rng.choice(list("ABCDEF"), size=n, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1]),
            "distance": rng.uniform(50, 4000, size=n),
            "hour": rng.integers(5, 23, size=n),
        }
    )
    q = expit(-1 + rng.normal(0, 1.2, size=n))
    y = (rng.uniform(size=n) < q).astype(int)
    p = q.copy()
    if bad_carrier is not None:
        bad = frame["carrier"].to_numpy() == bad_carrier
        p[bad] = expit(0.2 * logit(q[bad]) + rng.normal(0, 1.5, size=bad.sum()))
    return frame, y, p


def test_slice_metrics_match_binary_metrics_on_each_slice_with_bands_and_missing_values():
    frame, y, p = _flights(0, 6000)
    frame.loc[:99, "carrier"] = None
    out = slice_metrics(
        frame, y, p, ["carrier", "distance"], min_support=100, bands={"distance": [500, 1000, 2000]}
    )
    keys = [(s["column"], s["value"]) for s in out]
    assert keys == [
        ("carrier", None),
        *[("carrier", c) for c in "ABCDEF"],
        ("distance", "[-inf, 500)"),
        ("distance", "[500, 1000)"),
        ("distance", "[1000, 2000)"),
        ("distance", "[2000, inf)"),
    ]
    carrier = frame["carrier"].to_numpy()
    band = np.digitize(frame["distance"], [500, 1000, 2000])
    for s in out:
        if s["column"] == "carrier":
            mask = pd.isna(carrier) if s["value"] is None else carrier == s["value"]
        else:
            mask = band == [k for k in keys if k[0] == "distance"].index(("distance", s["value"]))
        ref = binary_metrics(y[mask], p[mask])
        assert s["n"] == ref["n"] == mask.sum()
        for name in ("log_loss", "auc", "brier", "positive_rate"):
            assert s[name] == pytest.approx(ref[name], abs=1e-12), (s, name)


def test_slice_metrics_respects_min_support_and_reports_no_auc_for_one_class():
    frame = pd.DataFrame({"g": ["a"] * 5 + ["b"] * 3 + ["c"] * 2})
    y = [1, 1, 1, 1, 1, 0, 1, 0, 0, 1]
    p = [0.9, 0.8, 0.7, 0.9, 0.6, 0.2, 0.7, 0.4, 0.5, 0.5]
    out = slice_metrics(frame, y, p, ["g"], min_support=3)
    assert [(s["value"], s["n"], s["auc"]) for s in out] == [("a", 5, None), ("b", 3, 1.0)]


def test_worst_slices_flags_the_one_carrier_the_model_gets_wrong():
    frame, y, p = _flights(1, 20_000, bad_carrier="E")
    flagged = worst_slices(frame, y, p, COLUMNS, bands=BANDS)
    assert [(s["column"], s["value"]) for s in flagged] == [("carrier", "E")]
    e = flagged[0]
    assert e["excess_log_loss"] > 0.1 and e["q_value"] < 1e-10
    assert e["rest_n"] + e["n"] == len(y) and e["log_loss"] - e["rest_log_loss"] == pytest.approx(
        e["excess_log_loss"]
    )
    # the test statistic is scipy's Welch t-test on the per-row log losses
    loss = -np.log(np.where(y == 1, p, 1 - p).clip(1e-7, 1))
    mask = frame["carrier"].to_numpy() == "E"
    ref = ttest_ind(loss[mask], loss[~mask], equal_var=False, alternative="greater")
    assert e["t_statistic"] == pytest.approx(ref.statistic, rel=1e-9)
    assert e["p_value"] == pytest.approx(ref.pvalue, rel=1e-6)


def test_worst_slices_flags_nothing_when_no_slice_differs():
    frame, y, p = _flights(2, 20_000)
    assert worst_slices(frame, y, p, COLUMNS, bands=BANDS) == []


def test_worst_slices_false_positive_rate_is_at_most_the_fdr_level_in_simulation():
    # under the global null the FDR is the chance of flagging anything; 200 draws, sd 0.015 at 5%
    reps = 200
    any_flagged = sum(
        bool(worst_slices(*_flights(100 + seed, 4000), COLUMNS, bands=BANDS, min_support=150, fdr=0.05))
        for seed in range(reps)
    )
    assert any_flagged / reps <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps)


def test_compare_slices_flags_the_planted_regression_only():
    frame, y, champion = _flights(3, 20_000)
    challenger = champion.copy()
    band = (frame["distance"] >= 1000).to_numpy() & (frame["distance"] < 2000).to_numpy()
    challenger[band] = expit(1.8 * logit(champion[band]) + 0.5)  # overconfident and biased on one band
    flagged = compare_slices(
        frame, y, challenger, champion, COLUMNS, min_support=500, max_worse=0.025, bands=BANDS
    )
    assert [(s["column"], s["value"]) for s in flagged] == [("distance", "[1000, 2000)")]
    s = flagged[0]
    assert s["difference"] == pytest.approx(s["challenger_log_loss"] - s["champion_log_loss"])
    assert s["difference"] > 0.035 and s["p_value"] < 1e-10 and s["n"] == band.sum()
    # a quarter of every carrier and hour lies in the band, so a tight gate also sees the regression
    # diluted there; the band itself still comes first
    tight = compare_slices(
        frame, y, challenger, champion, COLUMNS, min_support=500, max_worse=0.0, bands=BANDS
    )
    assert (tight[0]["column"], tight[0]["value"]) == ("distance", "[1000, 2000)")
    assert all(t["difference"] < s["difference"] / 2 for t in tight[1:])
    assert (
        compare_slices(frame, y, champion, champion, COLUMNS, min_support=500, max_worse=0.0, bands=BANDS)
        == []
    )


def test_errors_name_the_field_and_show_the_value():
    frame, y, p = _flights(4, 100)
    with pytest.raises(
        SchemaError, match="Column 'carier' is not in the frame. Closest matches: \\['carrier'\\]"
    ):
        slice_metrics(frame, y, p, ["carier"])
    with pytest.raises(InvalidConfig, match="strictly increasing numbers; got \\[0, 500, 500\\]"):
        slice_metrics(frame, y, p, ["distance"], bands={"distance": [0, 500, 500]})
    with pytest.raises(
        SchemaError, match="Column 'carrier' must be numeric to be banded; got .* \\(e.g. 'F'\\)"
    ):
        slice_metrics(frame, y, p, ["carrier"], bands={"carrier": [0, 1]})
    with pytest.raises(InvalidConfig, match="bands are given for 'distance', which is not among columns"):
        slice_metrics(frame, y, p, ["carrier"], bands=BANDS)
    with pytest.raises(SchemaError, match="frame has 100 rows but y and p have 99"):
        slice_metrics(frame, y[:99], p[:99], ["carrier"])
    with pytest.raises(InvalidConfig, match="columns must be a non-empty list"):
        worst_slices(frame, y, p, "carrier")
    with pytest.raises(InvalidConfig, match="max_worse must be a non-negative number.*got -0.1"):
        compare_slices(frame, y, p, p, ["carrier"], max_worse=-0.1)
