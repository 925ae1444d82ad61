"""Policies declared in the project file, and the label-count and drift triggers."""

from __future__ import annotations

from dataclasses import replace

import duckdb
import pytest

from loopml.errors import InvalidConfig
from loopml.loop import LoopController, RetrainPolicy
from loopml.loop.controller import _labels_between
from loopml.registry import ArtifactStore, Registry
from loopml.timeutil import parse_time
from loopml.workspace import Workspace


def test_a_project_declares_its_policy_by_name_or_in_full(flights_project):
    assert replace(flights_project, policy="triggered").policy == RetrainPolicy.named("triggered")
    custom = RetrainPolicy(cadence="weekly", trigger="labels", min_new_labels=5000)
    assert replace(flights_project, policy=custom).policy is custom
    assert flights_project.policy is None  # not declared: the loop's default (monthly)
    with pytest.raises(InvalidConfig, match="policy must be one of"):
        replace(flights_project, policy="hourly")
    with pytest.raises(InvalidConfig, match="RetrainPolicy.trigger must be one of"):
        RetrainPolicy(trigger="moon")
    with pytest.raises(InvalidConfig, match="got int"):
        RetrainPolicy.coerce(3)


def test_new_labels_are_counted_by_available_time(flights_project, flights_ws):
    a, b = parse_time("2013-03-01"), parse_time("2013-03-04")
    n = _labels_between(flights_ws.log, flights_project, a, b)
    rel = flights_ws.log.relation_sql(flights_project.label.source)
    direct = duckdb.connect().execute(
        f"SELECT count(*) FROM {rel} WHERE available_time > ? AND available_time <= ?", [a, b]).fetchall()[0][0]
    assert n == direct and 2000 < n < 4000  # about 900 flights land a day


@pytest.mark.slow
def test_labels_trigger_fires_once_enough_labels_arrived(flights_project, flights_ws, tmp_path):
    (tmp_path / "events").symlink_to(flights_ws.root / "events", target_is_directory=True)
    ws = Workspace(tmp_path)
    policy = RetrainPolicy(cadence="weekly", trigger="labels", min_new_labels=5000)
    project = replace(flights_project, policy=policy)  # declared in the project, not passed to the controller
    result = LoopController(project, ws).run(parse_time("2013-03-01"), parse_time("2013-03-12"))
    # champion's labels end on 1 March: by Monday 4 March ~2,700 new labels (no), by 11 March ~9,500 (yes)
    assert result.retrainings == 1
    reg = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    trigger = next(d for d in reg.decisions("flights") if d["kind"] == "trigger")
    assert trigger["at"].startswith("2013-03-11") and trigger["details"]["new_labels"] >= 5000
    assert trigger["details"]["kind"] == "labels"
