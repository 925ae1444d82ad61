"""The prediction log: every served prediction, and labels joined to it later by request id.

Records are JSON lines appended to segment files (one per writer process and start), written and
flushed to the operating system before a prediction is acknowledged -- so a killed process loses
nothing it acknowledged -- and fsynced at most every ``fsync_every`` seconds (group commit), which
bounds what a machine crash can lose. A line torn by a crash mid-write is skipped on reading. DuckDB
reads the segments directly (``read_json``), so monitoring, label joins and the next training set
query the log with SQL.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

__all__ = ["PredictionLog"]


class PredictionLog:
    """Append-only prediction and label log under ``root`` (``predictions/`` and ``labels/``).

    Parameters
    ----------
    root
        Folder for the log's segments.
    fsync_every
        Seconds between fsyncs; 0 fsyncs every batch.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync_every: float = 0.05) -> None:
        self.root = Path(root)
        self.fsync_every = fsync_every
        self._files: dict[str, Any] = {}
        self._last_sync: dict[str, float] = {}

    def _file(self, kind: str) -> Any:
        fh = self._files.get(kind)
        if fh is None:
            folder = self.root / kind
            folder.mkdir(parents=True, exist_ok=True)
            name = f"seg-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
            fh = open(folder / name, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends
            self._files[kind] = fh
            self._last_sync[kind] = 0.0
        return fh

    def _append(self, kind: str, records: Iterable[Mapping[str, Any]]) -> None:
        fh = self._file(kind)
        fh.write("".join(json.dumps(r, separators=(",", ":"), default=_default) + "\n" for r in records))
        fh.flush()
        now = time.monotonic()
        if now - self._last_sync[kind] >= self.fsync_every:
            os.fsync(fh.fileno())
            self._last_sync[kind] = now

    def log_predictions(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append prediction records (request_id, entity_id, model_version, at, score, features, ...)."""
        self._append("predictions", records)

    def log_labels(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append label records (request_id, label, label_time)."""
        self._append("labels", records)

    def close(self) -> None:
        for fh in self._files.values():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        self._files.clear()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------
    def _glob(self, kind: str) -> str | None:
        folder = self.root / kind
        if not folder.exists() or not any(folder.glob("seg-*.jsonl")):
            return None
        return str(folder / "seg-*.jsonl")

    def joined(self, *, start: Any = None, end: Any = None, labelled_by: Any = None) -> pd.DataFrame:
        """Predictions with their labels (log and wait): one row per prediction, label NULL if not yet known.

        ``labelled_by`` keeps only labels whose label_time is at or before it (what was known then).
        """
        for fh in self._files.values():
            fh.flush()
        preds = self._glob("predictions")
        if preds is None:
            return pd.DataFrame(columns=["request_id", "entity_id", "model_version", "at", "score", "label", "label_time"])
        labels = self._glob("labels")
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        where, params = [], []
        if start is not None:
            where.append('p."at" >= ?')
            params.append(pd.Timestamp(start))
        if end is not None:
            where.append('p."at" < ?')
            params.append(pd.Timestamp(end))
        pred_sql = (f"SELECT request_id, entity_id, model_version, CAST(\"at\" AS TIMESTAMPTZ) AS \"at\", score "
                    f"FROM read_json('{preds}', format='newline_delimited', ignore_errors=true, columns={{request_id:'VARCHAR', "
                    f"entity_id:'VARCHAR', model_version:'INTEGER', \"at\":'VARCHAR', score:'DOUBLE'}}) WHERE request_id IS NOT NULL AND \"at\" IS NOT NULL")
        if labels is None:
            sql = f"SELECT p.*, NULL::DOUBLE AS label, NULL::TIMESTAMPTZ AS label_time FROM ({pred_sql}) p"
        else:
            lab_filter = ""
            if labelled_by is not None:
                lab_filter = "WHERE CAST(label_time AS TIMESTAMPTZ) <= ?"
            sql = f"""
                WITH l AS (
                    SELECT request_id, label, CAST(label_time AS TIMESTAMPTZ) AS label_time
                    FROM read_json('{labels}', format='newline_delimited', ignore_errors=true,
                                   columns={{request_id:'VARCHAR', label:'DOUBLE', label_time:'VARCHAR'}})
                    WHERE request_id IS NOT NULL AND label_time IS NOT NULL {lab_filter.replace('WHERE', 'AND')}
                    QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY label_time) = 1
                )
                SELECT p.*, l.label, l.label_time FROM ({pred_sql}) p LEFT JOIN l USING (request_id)
            """
            if labelled_by is not None:
                params = [pd.Timestamp(labelled_by), *params]
        if where:
            sql = f"SELECT * FROM ({sql}) p WHERE " + " AND ".join(where)
        return con.execute(sql + ' ORDER BY "at", request_id', params).df()

    def read_predictions(self) -> pd.DataFrame:
        """Every logged prediction with all its fields (features as served included)."""
        for fh in self._files.values():
            fh.flush()
        preds = self._glob("predictions")
        if preds is None:
            return pd.DataFrame()
        return duckdb.sql(f"SELECT * FROM read_json_auto('{preds}', format='newline_delimited', ignore_errors=true) "
                          "WHERE request_id IS NOT NULL").df()


def _default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float | int):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
