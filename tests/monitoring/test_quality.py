"""Data quality: missing rates, ranges, unseen categories, schema violations and staleness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopml.errors import NotReady, SchemaError
from loopml.monitoring.quality import DataQuality, feature_staleness


def _ref():
    return pd.DataFrame({"x": [0.0, 5.0, 10.0, None], "n": [1, 2, 3, 4], "c": ["a", "b", "a", None]})


def test_rates_against_the_reference_are_exact():
    cur = pd.DataFrame({"x": [-1.0, 5.0, 11.0, None, None], "n": [1, 2, 3, 4, 100], "c": ["a", "z", "y", "z", None]})
    report = DataQuality().fit(_ref()).check(cur)
    by = {c["column"]: c for c in report["columns"]}
    assert by["x"]["missing_rate"] == 0.4 and by["x"]["reference_missing_rate"] == 0.25
    assert by["x"]["out_of_range_rate"] == pytest.approx(2 / 3)
    assert by["x"]["out_of_range_examples"] == [-1.0, 11.0] or by["x"]["out_of_range_examples"] == [11.0, -1.0]
    assert by["x"]["reference_range"] == [0.0, 10.0]
    assert by["n"]["out_of_range_rate"] == 0.2 and by["n"]["out_of_range_examples"] == [100.0]
    assert by["c"]["unseen_category_rate"] == 0.75 and by["c"]["unseen_categories"] == ["y", "z"]
    assert report["passed"] and report["schema_violations"] == []


def test_range_tolerance_widens_the_reference_range():
    cur = pd.DataFrame({"x": [10.5, 12.0], "n": [1, 1], "c": ["a", "a"]})
    by = {c["column"]: c for c in DataQuality(range_tolerance=0.1).fit(_ref()).check(cur)["columns"]}
    assert by["x"]["out_of_range_rate"] == 0.5  # 10.5 is within 10 + 0.1 * 10; 12 is not


def test_identical_batch_has_no_findings():
    ref = _ref()
    report = DataQuality().fit(ref).check(ref)
    summary = DataQuality().fit(ref).summary(report)
    assert summary == {"max_missing_rate": 0.25, "max_missing_rate_increase": 0.0, "max_out_of_range_rate": 0.0,
                       "max_unseen_category_rate": 0.0, "schema_violations": 0.0}


def test_schema_violations_name_the_column_and_show_the_bad_value():
    cur = pd.DataFrame({"x": [1.0, "oops", 2.0], "c": ["a", "b", "a"], "extra": [1, 2, 3]}, dtype=object)
    report = DataQuality(allow_extra_columns=False).fit(_ref()).check(cur)
    problems = {(v["column"], v["problem"]) for v in report["schema_violations"]}
    assert problems == {("n", "missing_column"), ("x", "wrong_type"), ("extra", "unexpected_column")}
    wrong = next(v for v in report["schema_violations"] if v["problem"] == "wrong_type")
    assert wrong["example"] == "oops" and wrong["count"] == 1 and "'x'" in wrong["message"]
    assert not report["passed"]


def test_categorical_numbers_are_compared_as_categories():
    ref = pd.DataFrame({"code": [1, 2, 3]})
    report = DataQuality(categorical=["code"]).fit(ref).check(pd.DataFrame({"code": [1, 4]}))
    assert report["columns"][0]["unseen_category_rate"] == 0.5 and report["columns"][0]["unseen_categories"] == ["4"]


def test_check_before_fit_and_bad_reference_columns_are_clear_errors():
    with pytest.raises(NotReady, match="before fit"):
        DataQuality().check(_ref())
    with pytest.raises(SchemaError, match="nope"):
        DataQuality().fit(_ref(), columns=["x", "nope"])


def test_staleness_uses_only_events_available_by_the_prediction_time():
    t = pd.Timestamp("2013-03-01T12:00:00Z")
    served = pd.DataFrame({"at": [t, t, t + pd.Timedelta(hours=1)], "origin": ["EWR", "JFK", "EWR"],
                           "tailnum": ["N1", "N2", "N1"]})
    weather = pd.DataFrame({"origin": ["EWR", "EWR", "JFK"],
                            "available_time": [t - pd.Timedelta(minutes=30), t + pd.Timedelta(minutes=10),
                                               t + pd.Timedelta(minutes=5)]})
    planes = pd.DataFrame({"tailnum": ["N1"], "available_time": [t - pd.Timedelta(days=1)]})
    out = feature_staleness(served, {"weather": weather, "planes": planes},
                            {"temp": ("weather", ("origin",)), "visib": ("weather", ("origin",)),
                             "seats": ("planes", ("tailnum",))})
    by = {d["feature"]: d for d in out}
    # EWR at t: 30 min (the event at t+10 is not yet available); JFK at t: none yet; EWR at t+1h: 50 min
    assert by["temp"]["no_event_rate"] == pytest.approx(1 / 3)
    assert by["temp"]["median_seconds"] == 40 * 60 and by["temp"]["max_seconds"] == 50 * 60
    assert by["visib"]["max_seconds"] == by["temp"]["max_seconds"]
    assert by["seats"]["no_event_rate"] == pytest.approx(1 / 3)  # N2 has no plane record
    assert by["seats"]["median_seconds"] == pytest.approx(np.median([86400, 86400 + 3600]))


def test_staleness_names_a_missing_source():
    served = pd.DataFrame({"at": [pd.Timestamp("2013-03-01", tz="UTC")], "origin": ["EWR"]})
    with pytest.raises(SchemaError, match="weather"):
        feature_staleness(served, {}, {"temp": ("weather", ("origin",))})
