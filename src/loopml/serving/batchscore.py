"""Batch scoring through the offline feature path, in bounded memory.

``loopml predict`` scores either every spine row of a time range or the rows of a Parquet file
(request fields plus the spine's time column), one chunk at a time: each chunk's point-in-time
features come from the offline executor and its scores from the registered model, and the chunk is
appended to the output Parquet file before the next is read. Memory is bounded by one chunk, not by
the range. The features are the ones the online path serves (one definition, two executors), so the
scores equal the served ones for the same rows and times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loopml.datasets.build import build_dataset
from loopml.errors import InvalidConfig, SchemaError
from loopml.events.log import EventLog
from loopml.features.offline import OfflineExecutor
from loopml.project import Project
from loopml.timeutil import utc_series
from loopml.training.model import GBMModel

__all__ = ["score_file", "score_range"]

Progress = Callable[[int, int], None]


def score_range(project: Project, log: EventLog, model: GBMModel, start: datetime, end: datetime, out: Path, *,
                chunk: timedelta = timedelta(days=7), progress: Progress | None = None) -> int:
    """Score every spine row scheduled in ``[start, end)`` into ``out``; returns the number of rows."""
    if not start < end:
        raise InvalidConfig(f"--from must be before --to; got {start.isoformat()} .. {end.isoformat()}")
    if chunk <= timedelta(0):
        raise InvalidConfig(f"chunk must be a positive duration; got {chunk}")
    edges = [start]
    while edges[-1] < end:
        edges.append(min(edges[-1] + chunk, end))

    def frames() -> Iterator[pd.DataFrame]:
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            frame = build_dataset(log, project, a, b)
            frame["score"] = model.predict_frame(frame) if len(frame) else np.array([], dtype=float)
            if progress is not None:
                progress(i + 1, len(edges) - 1)
            yield frame

    return _write(frames(), out)


def score_file(project: Project, log: EventLog, model: GBMModel, source: Path, out: Path, *,
               batch_rows: int = 50_000, progress: Progress | None = None) -> int:
    """Score the rows of the Parquet file ``source`` (request fields and the spine's time column) into ``out``."""
    sp = project.spine
    try:
        parquet = pq.ParquetFile(source)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidConfig(f"--input {source}: not a readable Parquet file ({exc})") from None
    names = parquet.schema_arrow.names
    need = list(dict.fromkeys([*sp.request_fields, sp.time_column]))
    missing = [c for c in need if c not in names]
    if missing:
        raise SchemaError(f"--input {source} lacks column(s) {missing} that scoring needs (the spine's request fields "
                          f"and {sp.time_column!r}); it has {names}")
    executor = OfflineExecutor(log, project.features)
    total, done = parquet.metadata.num_rows, 0

    def frames() -> Iterator[pd.DataFrame]:
        nonlocal done
        for batch in parquet.iter_batches(batch_size=batch_rows):
            frame = batch.to_pandas()
            t = utc_series(frame[sp.time_column], field=sp.time_column)  # BadTimestamp names the column
            frame[sp.time_column] = t
            frame["prediction_time"] = t - sp.lead
            scored = executor.join(frame)
            scored["score"] = model.predict_frame(scored) if len(scored) else np.array([], dtype=float)
            done += len(frame)
            if progress is not None:
                progress(done, total)
            yield scored

    return _write(frames(), out)


def _write(frames: Iterator[pd.DataFrame], out: Path) -> int:
    """Append each frame to one Parquet file, written to a temporary name and renamed when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    writer, schema, rows = None, None, 0
    try:
        for frame in frames:
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(partial, schema)
            writer.write_table(table)
            rows += len(frame)
        if writer is None:  # nothing at all: still write a valid, empty file
            return 0
    finally:
        if writer is not None:
            writer.close()
    partial.replace(out)
    return rows
