"""Watch a served window: drift, estimated and realised performance, data quality, alerts.

Reads what serving wrote -- the prediction log with the features as served -- and compares it with
the champion's training window (its reference), so monitoring needs no extra instrumentation.
Used by ``loopml monitor window``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from loopml.datasets.build import build_dataset
from loopml.evaluation.metrics import binary_metrics
from loopml.events.log import EventLog, duckdb_connect
from loopml.monitoring import Alert, AlertBook, PerformanceEstimator, drift_report
from loopml.project import Project
from loopml.registry.registry import Registry
from loopml.serving.predictionlog import PredictionLog

__all__ = ["monitor_window", "served_features"]


def served_features(plog: PredictionLog, start: datetime, end: datetime, *,
                    requests: bool = False) -> pd.DataFrame:
    """Predictions served in [start, end), in time order, with their features as served (one column each).

    With ``requests`` the request's fields come too, as ``request.<field>`` columns.
    """
    folder = plog.root / "predictions"
    if not any(folder.glob("seg-*.jsonl")):
        return pd.DataFrame()
    con = duckdb_connect()
    con.execute("SET TimeZone = 'UTC'")
    frame = con.execute(
        f"SELECT request_id, model_version, CAST(\"at\" AS TIMESTAMPTZ) AS \"at\", score, "
        f"{'request, ' if requests else ''}features "
        f"FROM read_json_auto('{folder / 'seg-*.jsonl'}', format='newline_delimited', ignore_errors=true) "
        f"WHERE request_id IS NOT NULL AND CAST(\"at\" AS TIMESTAMPTZ) >= ? AND CAST(\"at\" AS TIMESTAMPTZ) < ? "
        f"ORDER BY \"at\", request_id",
        [pd.Timestamp(start), pd.Timestamp(end)]).df()
    if frame.empty:
        return frame
    parts = [frame.drop(columns=[c for c in ("request", "features") if c in frame.columns]).reset_index(drop=True)]
    if requests:
        parts.append(pd.json_normalize(frame["request"].tolist()).add_prefix("request."))
    parts.append(pd.json_normalize(frame["features"].tolist()))
    return pd.concat(parts, axis=1)


def monitor_window(project: Project, log: EventLog, registry: Registry, plog: PredictionLog, start: datetime,
                   end: datetime, *, alerts_path: Path | None = None, alpha: float = 0.01) -> dict[str, Any]:
    """Everything monitoring knows about [start, end) of serving, against the champion's training window."""
    name, label = project.name, project.label.name
    mv, model = registry.load(name, "champion")
    served = served_features(plog, start, end)
    if served.empty:
        return {"window": [start.isoformat(), end.isoformat()], "predictions": 0, "alerts": []}
    ref = build_dataset(log, project, pd.Timestamp(mv.train_from).to_pydatetime(),
                        pd.Timestamp(mv.train_to).to_pydatetime())
    ref["score"] = model.predict_frame(ref)
    columns = [f for f in model.features if f in served.columns]
    drift = drift_report(ref[columns], served[columns], alpha=alpha, min_wasserstein=0.05, min_psi=0.02)
    scores = drift_report(ref[["score"]], served[["score"]], alpha=alpha)["columns"][0]

    known = ref[ref[label].notna()]
    estimator = PerformanceEstimator().fit(known[label].astype(float).to_numpy(), known["score"].to_numpy(float))
    estimate = estimator.estimate(served["score"].to_numpy(float))
    joined = plog.joined(start=start, end=end)
    lab = joined[joined["label"].notna()]
    realised = binary_metrics(lab["label"].to_numpy(float), lab["score"].to_numpy(float)) if len(lab) else None
    delay = (pd.to_datetime(lab["label_time"], utc=True) - pd.to_datetime(lab["at"], utc=True)) if len(lab) else None

    quality = []
    for c in columns:
        q: dict[str, Any] = {"feature": c, "missing_rate": float(served[c].isna().mean()),
                             "reference_missing_rate": float(ref[c].isna().mean())}
        if c in model.categories:
            seen = set(model.categories[c])
            values = served[c].dropna().astype(str)
            q["unseen_category_rate"] = float((~values.isin(seen)).mean()) if len(values) else 0.0
        quality.append(q)

    book = AlertBook.from_dict(_read_json(alerts_path)) if alerts_path and alerts_path.exists() else AlertBook([
        Alert("feature_drift_columns", open_above=2.5, close_below=0.5, min_samples=1000),
        Alert("prediction_drift_ks", open_above=0.1, close_below=0.05, min_samples=1000),
        Alert("estimated_log_loss_increase", open_above=0.05, close_below=0.02, min_samples=1000),
    ])
    n = len(served)
    at = end.isoformat()
    events = {
        "feature_drift_columns": book.update("feature_drift_columns", float(len(drift["drifted_columns"])), n=n, at=at),
        "prediction_drift_ks": book.update("prediction_drift_ks", float(scores["statistic"] or 0.0), n=n, at=at),
        "estimated_log_loss_increase": book.update(
            "estimated_log_loss_increase",
            float(estimate["log_loss"] / estimator.estimate(known["score"].to_numpy(float))["log_loss"] - 1), n=n, at=at),
    }
    if alerts_path is not None:
        alerts_path.parent.mkdir(parents=True, exist_ok=True)
        alerts_path.write_text(_dumps(book.to_dict()), encoding="utf-8")
    return {
        "window": [start.isoformat(), end.isoformat()], "model_version": mv.version, "predictions": n,
        "reference_window": [mv.train_from, mv.train_to],
        "feature_drift": drift, "prediction_drift": scores,
        "estimated_performance": estimate, "realised_performance": realised, "labelled": len(lab),
        "median_label_delay_minutes": float(delay.median().total_seconds() / 60) if delay is not None else None,
        "data_quality": quality,
        "alerts": {"open": book.open_alerts(), "events": {k: v for k, v in events.items() if v}},
    }


def _read_json(path: Path) -> Any:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def _dumps(doc: Any) -> str:
    import json

    return json.dumps(doc, indent=2, default=str)
