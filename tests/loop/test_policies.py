"""Retraining policies on a replayed clock: cadence, stateful continuation, performance triggers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loopml.errors import InvalidConfig
from loopml.loop import LoopController, RetrainPolicy
from loopml.loop.controller import week_starts
from loopml.registry import ArtifactStore, Registry
from loopml.timeutil import parse_time
from loopml.workspace import Workspace


def test_week_starts_are_mondays_after_start():
    weeks = week_starts(datetime(2013, 3, 1, tzinfo=UTC), datetime(2013, 4, 1, tzinfo=UTC))
    assert [w.day for w in weeks] == [4, 11, 18, 25]
    assert all(w.weekday() == 0 for w in weeks)


def test_bad_policy_names_the_field():
    with pytest.raises(InvalidConfig, match="cadence"):
        RetrainPolicy(cadence="daily")
    with pytest.raises(InvalidConfig, match="policy must be one of"):
        RetrainPolicy.named("sometimes")


def _workspace(flights_ws, tmp_path):
    (tmp_path / "events").symlink_to(flights_ws.root / "events", target_is_directory=True)
    return Workspace(tmp_path)


@pytest.mark.slow
def test_weekly_stateful_continues_the_champion_and_records_decisions(flights_project, flights_ws, tmp_path):
    ws = _workspace(flights_ws, tmp_path)
    policy = RetrainPolicy.named("weekly-stateful")
    result = LoopController(flights_project, ws, policy=policy).run(parse_time("2013-03-01"), parse_time("2013-03-19"))
    assert result.retrainings == 3  # Mondays 4, 11 and 18 March
    reg = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    challengers = reg.versions("flights")[1:]
    assert len(challengers) == 3
    for mv in challengers:
        assert mv.info["mode"] == "stateful" and mv.parent_version is not None
        _, model = reg.load("flights", mv.version)
        _, parent = reg.load("flights", mv.parent_version)
        assert model.num_trees() == parent.num_trees() + policy.stateful_rounds  # continued, not retrained
    kinds = [d["kind"] for d in reg.decisions("flights")]
    assert kinds.count("trigger") == 3
    assert kinds.count("promoted") + kinds.count("rejected") == 1 + 3  # the bootstrap promotion + one per check


def test_static_policy_never_retrains(flights_project, flights_ws, tmp_path):
    ws = _workspace(flights_ws, tmp_path)
    result = LoopController(flights_project, ws, policy=RetrainPolicy.named("static")).run(
        parse_time("2013-03-01"), parse_time("2013-03-04"))
    assert result.retrainings == 0
    assert [m["model_versions"] for m in result.months] == [[1]]
