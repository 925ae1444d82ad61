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
