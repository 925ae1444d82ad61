"""Shared fixtures: the flights project and one ingested event log per test session (per xdist worker)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLIGHTS = ROOT / "examples" / "flights"
sys.path.insert(0, str(FLIGHTS))  # flightsdata, the example's data preparation


@pytest.fixture(scope="session")
def flights_project():
    from loopml import load_project

    return load_project(FLIGHTS)


@pytest.fixture(scope="session")
def flights_ws(flights_project, tmp_path_factory):
    """A workspace whose event log holds all of 2013 (ingested once per session)."""
    from loopml.workspace import Workspace

    ws = Workspace.for_project(flights_project, tmp_path_factory.mktemp("flights-state"))
    ws.ensure_ingested(flights_project)
    return ws


@pytest.fixture(scope="session")
def flights_events():
    import flightsdata

    return flightsdata.load()


@pytest.fixture(scope="session")
def served_ws(flights_project, flights_ws, tmp_path_factory):
    """A workspace sharing the session's event log, with a small champion and online state up to 2013-03-01."""
    from loopml.events import Replayer
    from loopml.features import OnlineExecutor, SQLiteOnlineStore
    from loopml.loop.jobs import train_and_register
    from loopml.registry import ArtifactStore, Registry
    from loopml.timeutil import parse_time
    from loopml.workspace import Workspace

    root = tmp_path_factory.mktemp("served-state")
    (root / "events").symlink_to(flights_ws.root / "events", target_is_directory=True)
    ws = Workspace(root)
    reg = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    mv, _, _ = train_and_register(flights_project, ws.log, reg, parse_time("2013-02-01"), parse_time("2013-03-01"))
    reg.promote(flights_project.name, mv.version)
    online = OnlineExecutor(flights_project.features, store=SQLiteOnlineStore(ws.online_path))
    replayer = Replayer(ws.log, online.sources, columns=online.columns())
    for source, batch in replayer.advance_to(parse_time("2013-03-01T12:00:00Z")):
        online.update(source, batch)
    online.flush()
    return ws
