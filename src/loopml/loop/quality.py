"""Data quality where the loop meets data: each ingested batch and the requests served in a window.

:func:`served_quality` checks the features as served (read back from the prediction log) against the
champion's training window -- missing rates, out-of-range values, unseen categories, schema
violations -- and measures each event-backed feature's staleness from the event log's available
times. :func:`batch_quality` checks a batch about to be appended to a source against that source's
schema in the log and against its events in a reference window. Used by ``loopml monitor window``,
``loopml run`` and the loop report.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from loopml.datasets.build import build_dataset
from loopml.events.log import SYSTEM_COLUMNS, EventLog
from loopml.features.definitions import Aggregate, Latest
from loopml.loop.monitor import served_features
from loopml.monitoring.quality import DataQuality, feature_staleness
from loopml.project import Project
from loopml.registry.registry import Registry
from loopml.serving.predictionlog import PredictionLog

__all__ = ["batch_quality", "served_quality", "served_requests"]


def served_requests(plog: PredictionLog, start: datetime, end: datetime) -> pd.DataFrame:
    """Predictions served in [start, end): ``at``, the request's fields and the features as served."""
    return served_features(plog, start, end, requests=True)


def _groups(project: Project) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {f.name: (f.source, tuple(f.keys)) for f in project.features if isinstance(f, Aggregate | Latest)}


def served_quality(project: Project, log: EventLog, registry: Registry, plog: PredictionLog, start: datetime,
                   end: datetime, *, served: pd.DataFrame | None = None,
                   reference: pd.DataFrame | None = None) -> dict[str, Any]:
    """Quality of the features served in [start, end) against the champion's training window.

    ``served`` (from :func:`served_requests`) and ``reference`` (the training-window dataset) may be
    passed when the caller already has them.
    """
    mv, model = registry.load(project.name, Registry.CHAMPION)
    served = served_requests(plog, start, end) if served is None else served
    if served.empty:
        return {"rows": 0, "columns": [], "schema_violations": [], "staleness": [], "passed": True,
                "summary": {}}
    if reference is None:
        reference = build_dataset(log, project, pd.Timestamp(mv.train_from).to_pydatetime(),
                                  pd.Timestamp(mv.train_to).to_pydatetime())
    dq = DataQuality(categorical=project.categorical).fit(reference, columns=list(model.features))
    report = dq.check(served)
    report["summary"] = dq.summary(report)
    groups = _groups(project)
    keys_needed = sorted({k for _, keys in groups.values() for k in keys})
    rows = pd.DataFrame({"at": served["at"]})
    for k in keys_needed:
        col = f"request.{k}"
        rows[k] = served[col] if col in served.columns else None
    events = {}
    for source in sorted({s for s, _ in groups.values()}):
        cols = sorted({k for s, keys in groups.values() if s == source for k in keys})
        events[source] = log.read(source, end=end, columns=cols).select([*cols, "available_time"]).to_pandas()
    report["staleness"] = feature_staleness(rows, events, groups)
    report["summary"]["max_median_staleness_seconds"] = max(
        (s["median_seconds"] for s in report["staleness"] if s["median_seconds"] is not None), default=0.0)
    report["reference_window"] = [mv.train_from, mv.train_to]
    return report


def batch_quality(log: EventLog, source: str, batch: pd.DataFrame, *, reference_start: datetime | None = None,
                  reference_end: datetime | None = None, categorical: tuple[str, ...] = ()) -> dict[str, Any]:
    """Quality of ``batch`` (about to be appended to ``source``) against the source in the log.

    Columns are compared with the source's stored schema (a column it lacks or adds, text where
    numbers are stored); values with the source's events available in [reference_start,
    reference_end) (default: all of them).
    """
    existing = log.schema(source)
    stored = [n for n in existing.names if n not in SYSTEM_COLUMNS]
    reference = log.read(source, start=reference_start, end=reference_end, columns=stored).to_pandas()[stored]
    dq = DataQuality(categorical=categorical, allow_extra_columns=False).fit(reference)
    body = batch.drop(columns=[c for c in SYSTEM_COLUMNS if c in batch.columns])
    report = dq.check(body)
    report["source"] = source
    report["summary"] = dq.summary(report)
    return report
