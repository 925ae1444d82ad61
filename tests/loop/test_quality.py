"""Data quality and Prometheus metrics on a served window of real flights (a short static loop)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loopml.loop import LoopController, RetrainPolicy
from loopml.loop.quality import batch_quality, served_quality
from loopml.registry import ArtifactStore, Registry
from loopml.serving.predictionlog import PredictionLog
from loopml.timeutil import parse_time
from loopml.workspace import Workspace
from tests.conftest import FLIGHTS


@pytest.fixture(scope="module")
def looped(flights_project, flights_ws, tmp_path_factory):
    root = tmp_path_factory.mktemp("quality-state")
    (root / "events").symlink_to(flights_ws.root / "events", target_is_directory=True)
    ws = Workspace(root)
    LoopController(flights_project, ws, policy=RetrainPolicy.named("static")).run(
        parse_time("2013-03-01"), parse_time("2013-03-03"))
    return ws


def _registry(ws):
    return Registry(ws.registry_url, ArtifactStore(ws.artifacts))


def test_served_features_are_checked_against_the_training_window(flights_project, looped):
    report = served_quality(flights_project, looped.log, _registry(looped), PredictionLog(looped.predictions),
                            parse_time("2013-03-01"), parse_time("2013-03-03"))
    assert report["rows"] > 1500
    by = {c["column"]: c for c in report["columns"]}
    assert set(by) == set(flights_project.feature_names)
    assert report["schema_violations"] == [] and report["passed"]
    # served carriers, origins and destinations all occurred in Jan-Feb
    assert by["carrier"]["unseen_category_rate"] == 0.0 and by["origin"]["unseen_category_rate"] == 0.0
    assert by["origin_temp"]["reference_range"][0] < by["origin_temp"]["reference_range"][1]
    stale = {s["feature"]: s for s in report["staleness"]}
    # weather is hourly: the newest observation behind origin_temp is under 2 hours old for most requests
    assert stale["origin_temp"]["median_seconds"] < 2 * 3600
    # plane attributes are static, loaded before 2013: older than two months at prediction time
    assert stale["plane_seats"]["median_seconds"] > 59 * 86400
    assert report["summary"]["schema_violations"] == 0.0


def test_an_ingest_batch_with_bad_values_is_reported(looped):
    log = looped.log
    batch = log.read("weather", start=parse_time("2013-03-01"), end=parse_time("2013-03-02")).to_pandas()
    batch = batch.drop(columns=["event_id", "event_time", "available_time"])
    batch.loc[batch.index[0], "temp"] = 500.0  # far above anything seen
    batch.loc[batch.index[1], "origin"] = "XXX"
    batch["oops"] = 1
    report = batch_quality(log, "weather", batch, reference_end=parse_time("2013-03-01"), categorical=("origin",))
    by = {c["column"]: c for c in report["columns"]}
    assert by["temp"]["out_of_range_examples"][0] == 500.0
    assert by["origin"]["unseen_categories"] == ["XXX"]
    assert [v["problem"] for v in report["schema_violations"]] == ["unexpected_column"]
    assert report["schema_violations"][0]["column"] == "oops"


@pytest.mark.slow
def test_monitor_window_cli_writes_quality_and_prometheus_metrics(looped, tmp_path):
    prom = tmp_path / "loopml.prom"
    proc = subprocess.run([sys.executable, "-m", "loopml.cli", "monitor", "window", "--project", str(FLIGHTS),
                           "--state", str(looped.root), "--from", "2013-03-01", "--to", "2013-03-03", "--json",
                           "--metrics-file", str(prom)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["data_quality"]["rows"] == doc["predictions"]
    assert {s["feature"] for s in doc["data_quality"]["staleness"]} >= {"origin_temp", "plane_prev_arr_delay"}
    samples = {(s.name, s.labels.get("feature"), s.labels.get("check"), s.labels.get("alert")): s.value
               for fam in text_string_to_metric_families(prom.read_text()) for s in fam.samples}
    assert samples[("loopml_monitor_predictions", None, None, None)] == doc["predictions"]
    assert ("loopml_data_quality_rate", "origin_temp", "missing", None) in samples
    assert ("loopml_feature_drifted", "origin_temp", None, None) in samples
    assert ("loopml_alert_open", None, None, "feature_drift_columns") in samples
    realised = [v for (n, *_), v in samples.items() if n == "loopml_performance"]
    assert realised and all(pd.notna(v) for v in realised)
