"""Prometheus metrics from a monitoring document: own registry, textfile output, HTTP exposition."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from loopml.monitoring.prometheus import exposition, monitor_metrics, serve_metrics, write_metrics_file

DOC = {
    "predictions": 1200, "labelled": 900, "model_version": 3,
    "feature_drift": {"drifted": True, "columns": [
        {"column": "origin_temp", "test": "ks", "statistic": 0.31, "p_value": 1e-9, "p_value_adjusted": 2e-8,
         "drifted": True},
        {"column": "carrier", "test": "chi2", "statistic": 4.2, "p_value": 0.4, "p_value_adjusted": 0.8,
         "drifted": False}]},
    "prediction_drift": {"column": "score", "test": "ks", "statistic": 0.12, "p_value": 0.001},
    "estimated_performance": {"log_loss": 0.52, "accuracy": 0.77, "reliable": False},
    "realised_performance": {"log_loss": 0.55, "auc": 0.71, "brier": 0.18, "n": 900},
    "median_label_delay_minutes": 150.0,
    "data_quality": {"columns": [{"column": "origin_temp", "missing_rate": 0.02, "out_of_range_rate": 0.1},
                                 {"column": "carrier", "missing_rate": 0.0, "unseen_category_rate": 0.05}],
                     "schema_violations": [{"column": "x", "problem": "wrong_type"}],
                     "staleness": [{"feature": "origin_temp", "median_seconds": 1800.0, "p95_seconds": 3000.0,
                                    "max_seconds": None}]},
    "alerts": {"open": ["feature_drift_columns"], "events": {}},
}


def _samples(text):
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "project"))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_every_part_of_the_document_becomes_a_labelled_gauge():
    s = _samples(exposition(monitor_metrics(DOC, project="flights",
                                            alert_names=("feature_drift_columns", "prediction_drift_ks"))))
    assert s[("loopml_monitor_predictions", ())] == 1200
    assert s[("loopml_feature_drift_statistic", (("feature", "origin_temp"), ("test", "ks")))] == 0.31
    assert s[("loopml_feature_drifted", (("feature", "origin_temp"),))] == 1.0
    assert s[("loopml_feature_drifted", (("feature", "carrier"),))] == 0.0
    assert s[("loopml_dataset_drifted", ())] == 1.0
    assert s[("loopml_prediction_drift_statistic", ())] == 0.12
    assert s[("loopml_performance", (("kind", "estimated"), ("metric", "log_loss")))] == 0.52
    assert s[("loopml_performance", (("kind", "realised"), ("metric", "auc")))] == 0.71
    assert s[("loopml_performance_estimate_reliable", ())] == 0.0
    assert s[("loopml_label_delay_median_seconds", ())] == 9000.0
    assert s[("loopml_data_quality_rate", (("check", "out_of_range"), ("feature", "origin_temp")))] == 0.1
    assert s[("loopml_data_quality_rate", (("check", "unseen_category"), ("feature", "carrier")))] == 0.05
    assert s[("loopml_data_quality_schema_violations", ())] == 1.0
    assert s[("loopml_feature_staleness_seconds", (("feature", "origin_temp"), ("quantile", "0.5")))] == 1800.0
    assert s[("loopml_alert_open", (("alert", "feature_drift_columns"),))] == 1.0
    assert s[("loopml_alert_open", (("alert", "prediction_drift_ks"),))] == 0.0  # closed alerts are reported too


def test_metrics_live_in_their_own_registry_not_the_global_one():
    monitor_metrics(DOC, project="flights")
    monitor_metrics(DOC, project="flights")  # a second call must not collide with the first
    assert REGISTRY.get_sample_value("loopml_monitor_predictions", {"project": "flights"}) is None


def test_an_empty_window_gives_only_counts():
    s = _samples(exposition(monitor_metrics({"predictions": 0, "alerts": []}, project="flights")))
    assert s[("loopml_monitor_predictions", ())] == 0
    assert not any(name.startswith("loopml_feature_drift") for name, _ in s)


def test_textfile_output_is_parseable(tmp_path):
    path = write_metrics_file(monitor_metrics(DOC, project="flights"), tmp_path / "prom" / "loopml.prom")
    s = _samples(path.read_text())
    assert s[("loopml_monitor_labelled", ())] == 900
    assert not list(path.parent.glob("*.tmp*"))  # written atomically


def test_http_exposition_serves_the_registry():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = serve_metrics(monitor_metrics(DOC, project="flights"), port)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert _samples(text)[("loopml_monitor_predictions", ())] == 1200
