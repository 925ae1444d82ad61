"""Prometheus metrics of a monitoring result, in a registry of their own (no global state).

:func:`monitor_metrics` turns the document ``loopml monitor window`` produces into gauges: feature
and prediction drift, estimated and realised performance, data quality, staleness and the state of
every alert. :func:`write_metrics_file` writes them atomically for node_exporter's textfile
collector; :func:`serve_metrics` exposes them over HTTP for a scraper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest, start_http_server, write_to_textfile

__all__ = ["exposition", "monitor_metrics", "serve_metrics", "write_metrics_file"]


def _num(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def monitor_metrics(doc: Mapping[str, Any], *, project: str, alert_names: tuple[str, ...] = ()) -> CollectorRegistry:
    """Gauges for one monitored window (see :func:`loopml.loop.monitor.monitor_window`).

    Parameters
    ----------
    doc
        The monitoring document: ``feature_drift``, ``prediction_drift``, ``estimated_performance``,
        ``realised_performance``, ``data_quality`` and ``alerts`` (all optional).
    project
        Value of the ``project`` label on every series.
    alert_names
        Alerts to report even when closed (open ones are always reported).
    """
    r = CollectorRegistry(auto_describe=True)
    p = project

    def gauge(name: str, doc_: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc_, ["project", *labels], registry=r)

    g = gauge("loopml_monitor_predictions", "Predictions served in the monitored window")
    g.labels(p).set(_num(doc.get("predictions", 0)))
    g = gauge("loopml_monitor_labelled", "Served predictions in the window whose label has arrived")
    g.labels(p).set(_num(doc.get("labelled", 0)))
    if doc.get("model_version") is not None:
        gauge("loopml_monitor_model_version", "Champion version monitored").labels(p).set(_num(doc["model_version"]))

    drift = doc.get("feature_drift") or {}
    if drift.get("columns"):
        stat = gauge("loopml_feature_drift_statistic", "Drift test statistic per feature", ("feature", "test"))
        padj = gauge("loopml_feature_drift_p_value_adjusted", "Adjusted p-value of the drift test", ("feature", "test"))
        flag = gauge("loopml_feature_drifted", "1 if the feature drifted (after correction and effect floors)",
                     ("feature",))
        for c in drift["columns"]:
            test = str(c.get("test") or "")
            stat.labels(p, c["column"], test).set(_num(c.get("statistic")))
            padj.labels(p, c["column"], test).set(_num(c.get("p_value_adjusted")))
            flag.labels(p, c["column"]).set(1.0 if c.get("drifted") else 0.0)
        gauge("loopml_dataset_drifted", "1 if the dataset-level drift verdict is positive").labels(p).set(
            1.0 if drift.get("drifted") else 0.0)
    pred = doc.get("prediction_drift")
    if pred:
        gauge("loopml_prediction_drift_statistic", "KS statistic of served scores vs the reference").labels(p).set(
            _num(pred.get("statistic")))
        gauge("loopml_prediction_drift_p_value", "p-value of the score drift test").labels(p).set(
            _num(pred.get("p_value")))

    perf = gauge("loopml_performance", "Model performance in the window", ("metric", "kind"))
    for kind in ("estimated", "realised"):
        values = doc.get(f"{kind}_performance") or {}
        for metric in ("log_loss", "accuracy", "auc", "brier", "ece"):
            if metric in values and isinstance(values[metric], int | float):
                perf.labels(p, metric, kind).set(_num(values[metric]))
    est = doc.get("estimated_performance") or {}
    if "reliable" in est:
        gauge("loopml_performance_estimate_reliable", "1 if the label-free estimate is trustworthy").labels(p).set(
            1.0 if est["reliable"] else 0.0)
    if doc.get("median_label_delay_minutes") is not None:
        gauge("loopml_label_delay_median_seconds", "Median delay from prediction to label").labels(p).set(
            60.0 * _num(doc["median_label_delay_minutes"]))

    quality = doc.get("data_quality")
    if isinstance(quality, Mapping):
        rate = gauge("loopml_data_quality_rate", "Share of served values with a quality problem", ("feature", "check"))
        for c in quality.get("columns", []):
            for check in ("missing_rate", "out_of_range_rate", "unseen_category_rate"):
                if check in c:
                    rate.labels(p, c["column"], check.removesuffix("_rate")).set(_num(c[check]))
        gauge("loopml_data_quality_schema_violations", "Schema violations in served features").labels(p).set(
            float(len(quality.get("schema_violations", []))))
        stale = gauge("loopml_feature_staleness_seconds", "Age of the newest event behind a feature at prediction time",
                      ("feature", "quantile"))
        for s in quality.get("staleness", []):
            for q, key in (("0.5", "median_seconds"), ("0.95", "p95_seconds"), ("1", "max_seconds")):
                stale.labels(p, s["feature"], q).set(_num(s.get(key)))

    alerts = doc.get("alerts") or {}
    open_ = list(alerts.get("open", [])) if isinstance(alerts, Mapping) else []
    names = sorted({*alert_names, *open_})
    if names:
        state = gauge("loopml_alert_open", "1 while the alert is open (hysteresis: opens once, closes once)", ("alert",))
        for a in names:
            state.labels(p, a).set(1.0 if a in open_ else 0.0)
    return r


def write_metrics_file(registry: CollectorRegistry, path: str | Path) -> Path:
    """Write ``registry`` in the text exposition format to ``path`` (atomically: temp file and rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path


def serve_metrics(registry: CollectorRegistry, port: int, *, addr: str = "127.0.0.1") -> Any:
    """Expose ``registry`` on http://addr:port/metrics from a daemon thread; returns the server."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server


def exposition(registry: CollectorRegistry) -> str:
    """The registry in Prometheus' text format."""
    return generate_latest(registry).decode()
