"""Leakage checks: single-feature AUC (out-of-fold for categories), split overlap, declared availability."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from loopml import Latest, RequestFeature, Spine
from loopml.errors import FeatureNotFound, InvalidConfig, SchemaError
from loopml.evaluation import availability_violations, leakage_report, single_feature_auc
from loopml.events import EventLog

CARRIER_EFFECT = {"AA": -12.0, "B6": 0.0, "DL": -6.0, "EV": 18.0, "UA": 6.0, "WN": 12.0}
JAN, APR, JUL, OCT = (datetime(2013, m, 1, tzinfo=UTC) for m in (1, 4, 7, 10))


def _flights(seed: int = 0, n: int = 4000) -> tuple[pd.DataFrame, np.ndarray]:
    """Simulated flights: the arrival delay depends on precipitation and carrier; the label is delay > 15."""
    rng = np.random.default_rng(seed)
    carrier = rng.choice(list(CARRIER_EFFECT), size=n)
    precip = np.where(rng.uniform(size=n) < 0.6, 0.0, rng.exponential(1.0, size=n))
    delay = rng.normal(-2.0, 20.0, size=n) + 8.0 * precip + np.vectorize(CARRIER_EFFECT.get)(carrier)
    frame = pd.DataFrame({
        "arr_delay": delay,                                      # the label's own source column: a leak
        "arr_delay_noisy": delay + rng.normal(0.0, 4.0, size=n),  # a noisy copy: still a leak
        "precip": precip,                                         # legit and weak
        "hour": rng.integers(5, 23, size=n).astype(float),       # legit, no signal
        "carrier": carrier,
        "flight_id": [f"F{i:07d}" for i in rng.choice(10**7, size=n, replace=False)],  # one row per id
    })
    return frame, (delay > 15).astype(int)


def test_noisy_copy_of_the_arrival_delay_is_flagged_and_weak_legit_features_are_not():
    frame, y = _flights()
    out = single_feature_auc(frame, y, ["precip", "arr_delay_noisy", "hour", "arr_delay"])
    by = {r["feature"]: r for r in out}
    assert by["arr_delay"]["auc"] == 1.0 and by["arr_delay"]["suspicious"]
    assert 0.95 < by["arr_delay_noisy"]["auc"] < 1.0 and by["arr_delay_noisy"]["suspicious"]
    assert 0.55 < by["precip"]["auc"] < 0.8 and not by["precip"]["suspicious"]
    assert not by["hour"]["suspicious"]
    assert [r["feature"] for r in out] == ["arr_delay", "arr_delay_noisy", "precip", "hour"]  # strongest 1st
    assert by["precip"]["auc"] == pytest.approx(roc_auc_score(y, frame["precip"]), abs=1e-12)  # the reference
    assert all(r["coverage"] == 1.0 for r in out)


def test_auc_uses_present_rows_only_and_counts_inverted_features():
    frame, y = _flights()
    frame.loc[frame.index[::4], "precip"] = np.nan
    frame["minus_precip"] = -frame["precip"]
    out = {r["feature"]: r for r in single_feature_auc(frame, y, ["precip", "minus_precip"])}
    ok = frame["precip"].notna().to_numpy()
    assert out["precip"]["auc"] == pytest.approx(roc_auc_score(y[ok], frame["precip"][ok]), abs=1e-12)
    assert out["minus_precip"]["auc"] == pytest.approx(out["precip"]["auc"], abs=1e-12)
    assert out["precip"]["coverage"] == 0.75


def test_id_with_one_row_per_value_is_not_flagged_but_in_fold_encoding_would_have_been():
    frame, y = _flights()
    out = {r["feature"]: r for r in single_feature_auc(frame, y, ["flight_id", "carrier"],
                                                     categorical=["flight_id", "carrier"])}
    # out of fold, every id is unseen: all rows score the prior, a constant, so AUC is exactly 0.5
    assert out["flight_id"]["auc"] == 0.5 and not out["flight_id"]["suspicious"]
    in_fold = pd.Series(y).groupby(frame["flight_id"].to_numpy()).transform("mean")
    assert roc_auc_score(y, in_fold) == 1.0  # the row's own label: in-fold encoding would flag the id
    # a legit low-cardinality category keeps its signal out of fold
    carrier_in_fold = roc_auc_score(y, pd.Series(y).groupby(frame["carrier"].to_numpy()).transform("mean"))
    assert out["carrier"]["auc"] == pytest.approx(carrier_in_fold, abs=0.02)
    assert out["carrier"]["auc"] > 0.6 and not out["carrier"]["suspicious"]


def test_categorical_leak_with_few_values_is_still_flagged_out_of_fold():
    frame, y = _flights()
    frame["delay_band"] = pd.cut(frame["arr_delay"], [-np.inf, 0, 15, 60, np.inf]).astype(str)
    frame.loc[frame.index[:100], "delay_band"] = None
    (r,) = single_feature_auc(frame, y, ["delay_band"], categorical=["delay_band"])
    assert r["auc"] == 1.0 and r["suspicious"] and r["coverage"] == 0.975


def test_bad_inputs_are_named_with_their_values():
    frame, y = _flights(n=200)
    with pytest.raises(SchemaError, match=r"'carrier' is not numeric .*categorical="):
        single_feature_auc(frame, y, ["carrier"])
    with pytest.raises(FeatureNotFound, match=r"'precipitation'.*\['precip'\]"):
        single_feature_auc(frame, y, ["precipitation"])
    with pytest.raises(SchemaError, match=r"binary labels 0/1; got 2.0 at row 3"):
        single_feature_auc(frame, [0, 1, 0, 2] + [0] * 196, ["precip"])
    with pytest.raises(InvalidConfig, match=r"threshold must be a number from 0\.5 to 1; got 1\.5"):
        single_feature_auc(frame, y, ["precip"], threshold=1.5)


def test_leakage_report_combines_leaky_features_and_overlapping_windows():
    frame, y = _flights()
    report = leakage_report(frame, y, ["arr_delay_noisy", "precip", "carrier"], categorical=["carrier"],
                            train_window=(JAN, JUL), test_window=(APR, OCT))
    kinds = [(f["kind"], f["what"]) for f in report["findings"]]
    assert kinds == [("single_feature_auc", "arr_delay_noisy"),
                     ("window_overlap", "train_window/test_window")]
    overlap = report["findings"][1]
    assert overlap["value"] == (JUL - APR).total_seconds() and overlap["threshold"] == 0.0
    assert "91 day(s)" in overlap["message"]
    assert "'arr_delay_noisy'" in report["findings"][0]["message"]
    assert not report["passed"] and report["entity_overlap"] is None
    assert len(report["single_feature_auc"]) == 3


def test_adjacent_windows_pass_and_a_test_window_before_training_is_reported():
    frame, y = _flights(n=500)
    clean = leakage_report(frame, y, ["precip"], train_window=(JAN, APR),
                           test_window=("2013-04-01", "2013-07-01"))  # ISO strings work too
    assert clean["passed"] and clean["findings"] == []
    back = leakage_report(frame, y, ["precip"], train_window=(JUL, OCT), test_window=(JAN, APR))
    (f,) = back["findings"]
    assert f["kind"] == "window_order" and f["value"] == (JUL - APR).total_seconds()
    with pytest.raises(InvalidConfig, match="train_window must start before it ends; got start 2013-07-01"):
        leakage_report(frame, y, ["precip"], train_window=(JUL, JAN), test_window=(JUL, OCT))


def test_entity_overlap_is_the_share_of_test_entities_seen_in_training():
    frame, y = _flights(n=1000)
    ids = list(frame["flight_id"][:30]) + [f"new{i}" for i in range(70)] + [None]
    test = pd.DataFrame({"flight_id": ids})
    kw = {"train_window": (JAN, APR), "test_window": (APR, JUL), "frame_test": test,
          "entity_column": "flight_id"}
    report = leakage_report(frame, y, ["precip"], **kw)
    assert report["entity_overlap"] == 0.3
    (f,) = report["findings"]
    assert (f["kind"], f["what"], f["value"], f["threshold"]) == ("entity_overlap", "flight_id", 0.3, 0.0)
    assert "(30 of 100)" in f["message"]
    assert leakage_report(frame, y, ["precip"], max_entity_overlap=0.5, **kw)["passed"]
    with pytest.raises(InvalidConfig, match="frame_test and entity_column go together"):
        leakage_report(frame, y, ["precip"], train_window=(JAN, APR), test_window=(APR, JUL), frame_test=test)


def test_availability_violations_flag_impossible_times_undeclared_request_fields_and_missing_sources(
    tmp_path,
):
    log = EventLog(tmp_path)
    t = pd.Timestamp("2013-01-01 10:00", tz="UTC")
    log.append("weather", pd.DataFrame({"origin": ["JFK"], "precip": [0.1], "time": [t]}),
               event_time="time", available_time="time")
    # a segment written by another tool, bypassing append's check: known an hour before it happened
    (tmp_path / "outcomes").mkdir()
    bad = pd.DataFrame({"event_id": [0, 1], "event_time": [t, t],
                        "available_time": [t - timedelta(hours=1), t],
                        "carrier": ["UA", "AA"], "arr_delay": [30.0, 0.0]})
    segment = tmp_path / "outcomes" / "seg-000000000000.parquet"
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), segment)
    spine = Spine("departures", "flight_id", "sched_dep", timedelta(hours=2),
                  ("carrier", "origin", "sched_dep"))
    features = [
        Latest("origin_precip", "weather", "origin", "precip"),
        Latest("carrier_last_delay", "outcomes", "carrier", "arr_delay"),
        Latest("origin_radar", "radar", "origin", "reflectivity"),
        Latest("origin_snow", "weather", "origin", "snow"),
        RequestFeature("carrier", lambda r: r["carrier"], "carrier", dtype="category"),
        RequestFeature("late_arrival", lambda r: float(r["arr_time"] > r["sched_arr"]),
                       ("arr_time", "sched_arr")),
    ]
    found = availability_violations(log, features, spine)
    assert [(f["kind"], f["what"], f["value"]) for f in found] == [
        ("available_before_event", "carrier_last_delay", 1),
        ("missing_source", "origin_radar", "radar"),
        ("missing_column", "origin_snow", ["snow"]),
        ("request_input", "late_arrival", ["arr_time", "sched_arr"]),
    ]
    assert "request_fields are ['carrier', 'origin', 'sched_dep']" in found[3]["message"]
    assert availability_violations(log, features[:1] + features[4:5], spine) == []


@pytest.mark.parametrize("seed", range(5))
def test_single_feature_auc_equals_scikit_learn_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 5000))
    y = (rng.uniform(size=n) < rng.uniform(0.05, 0.95)).astype(int)
    frame = pd.DataFrame({"fine": rng.normal(size=n) + y * rng.uniform(0, 2),
                          "coarse": np.round(rng.normal(size=n) + y, 1),  # many ties
                          "few": rng.integers(0, 3, size=n).astype(float)})
    out = {r["feature"]: r["auc"] for r in single_feature_auc(frame, y, list(frame))}
    for name in frame:
        auc = roc_auc_score(y, frame[name])
        assert out[name] == pytest.approx(max(auc, 1 - auc), abs=1e-12)
