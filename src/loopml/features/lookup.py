"""Point lookups of one spine entity's online features at a time, by replaying the log to it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loopml.errors import EntityNotFound
from loopml.events.log import EventLog, duckdb_connect
from loopml.events.replay import Replayer
from loopml.features.offline import records
from loopml.features.online import OnlineExecutor
from loopml.project import Project

__all__ = ["lookup_entity", "spine_request"]


def spine_request(project: Project, log: EventLog, entity_id: str) -> dict[str, Any]:
    """The request fields of spine entity ``entity_id`` (e.g. a flight) as a live request would carry them."""
    sp = project.spine
    sql = f'SELECT * FROM {log.relation_sql(sp.source)} WHERE "{sp.id}" = ?'
    frame = duckdb_connect().execute(sql, [entity_id]).df()
    if frame.empty:
        raise EntityNotFound(f"{sp.id} {entity_id!r} is not in source {sp.source!r}; "
                              f"expected an id like {_example(log, project)!r}")
    for c in frame.columns:
        if str(frame[c].dtype).startswith("datetime64"):
            frame[c] = frame[c].dt.tz_convert("UTC") if frame[c].dt.tz is not None else frame[c].dt.tz_localize("UTC")
    return records(frame, list(sp.request_fields))[0]


def _example(log: EventLog, project: Project) -> str:
    sp = project.spine
    row = duckdb_connect().execute(f'SELECT "{sp.id}" FROM {log.relation_sql(sp.source)} LIMIT 1').fetchall()
    return str(row[0][0]) if row else ""


def lookup_entity(project: Project, log: EventLog, entity_id: str, at: datetime) -> dict[str, Any]:
    """Replay every feature source to ``at`` through a fresh online executor and read the entity's features.

    Returns ``{"id", "at", "request", "features", "available_at"}``: ``available_at`` maps each stored
    feature to the ISO available time of the newest event behind its value (None: none), as
    :meth:`OnlineExecutor.get_with_freshness` reports it.
    """
    request = spine_request(project, log, entity_id)
    online = OnlineExecutor(project.features)
    replayer = Replayer(log, online.sources, end=None, columns=online.columns())
    for source, events in replayer.advance_to(at):
        online.update(source, events)
    found = online.get_with_freshness(request, at)
    return {"id": entity_id, "at": at.isoformat(), "request": request, "features": found.values,
            "available_at": {n: None if a is None else a.isoformat() for n, a in found.available_at.items()}}
