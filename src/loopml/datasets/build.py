"""Spines, point-in-time training sets and time splits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from loopml.errors import SchemaError
from loopml.events.log import EventLog, duckdb_connect
from loopml.features.offline import OfflineExecutor
from loopml.project import Project

__all__ = ["build_dataset", "build_spine", "time_split"]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def build_spine(log: EventLog, project: Project, start: datetime, end: datetime) -> pd.DataFrame:
    """One row per spine event with ``start <= time_column < end``, with its label and label time.

    Columns: the spine id, carried columns, request fields, ``prediction_time`` (UTC), the label
    (nullable) and ``label_available_time``. Rows are in (prediction_time, id) order.
    """
    sp, lb = project.spine, project.label
    names = log.schema(sp.source).names
    for c in (sp.id, sp.time_column, *sp.request_fields, *sp.carry):
        if c not in names:
            raise SchemaError(f"spine source {sp.source!r} has no column {c!r}; it has {names}")
    lead_us = int(sp.lead.total_seconds() * 1_000_000)
    cols = list(dict.fromkeys([sp.id, *sp.carry, *sp.request_fields]))
    select = ", ".join(f"s.{_q(c)}" for c in cols)
    sql = f"""
        WITH lab AS (
            SELECT {_q(lb.id)} AS __id, {_q(lb.column)} AS __label, available_time AS __lat
            FROM {log.relation_sql(lb.source)}
            QUALIFY row_number() OVER (PARTITION BY {_q(lb.id)} ORDER BY available_time, event_id) = 1
        )
        SELECT {select},
               make_timestamptz(epoch_us(s.{_q(sp.time_column)}) - {lead_us}) AS prediction_time,
               lab.__label AS {_q(lb.name)}, lab.__lat AS label_available_time
        FROM {log.relation_sql(sp.source)} s LEFT JOIN lab ON s.{_q(sp.id)} = lab.__id
        WHERE s.{_q(sp.time_column)} >= ? AND s.{_q(sp.time_column)} < ?
        ORDER BY prediction_time, s.{_q(sp.id)}
    """
    con = duckdb_connect()
    con.execute("SET TimeZone = 'UTC'")
    frame = con.execute(sql, [start, end]).df()
    for c in ("prediction_time", "label_available_time", sp.time_column):
        if c in frame.columns:
            frame[c] = pd.to_datetime(frame[c], utc=True).astype("datetime64[us, UTC]")
    frame[lb.name] = frame[lb.name].astype("Float64")
    return frame


def build_dataset(log: EventLog, project: Project, start: datetime, end: datetime, *,
                  label_cutoff: datetime | None = None, features: Sequence[str] | None = None,
                  threads: int | None = None) -> pd.DataFrame:
    """Spine rows scheduled in ``[start, end)`` with point-in-time features and the label.

    With ``label_cutoff``, labels not yet available at the cutoff are set missing: a model trained
    at the cutoff could not have seen them.
    """
    spine = build_spine(log, project, start, end)
    if label_cutoff is not None:
        late = spine["label_available_time"].isna() | (spine["label_available_time"] > pd.Timestamp(label_cutoff))
        spine.loc[late, project.label.name] = pd.NA
    executor = OfflineExecutor(log, project.features, threads=threads)
    return executor.join(spine, features=features)


def time_split(frame: pd.DataFrame, boundaries: Sequence[datetime], *, column: str = "prediction_time") -> list[pd.DataFrame]:
    """Split rows into consecutive time windows at ``boundaries`` (each window is [b_i, b_i+1))."""
    edges = [pd.Timestamp(b) for b in boundaries]
    if any(b >= a for a, b in zip(edges[1:], edges[:-1], strict=False)):
        raise ValueError(f"time_split boundaries must increase; got {boundaries}")
    parts = []
    t = frame[column]
    for lo, hi in zip(edges[:-1], edges[1:], strict=False):
        parts.append(frame[(t >= lo) & (t < hi)].reset_index(drop=True))
    return parts
