"""The loop enforces the project's promotion gates, and records each gate's numbers with the decision."""

from __future__ import annotations

from dataclasses import replace

import pytest

from loopml.evaluation import MinimumFunctionality
from loopml.loop import LoopController, RetrainPolicy
from loopml.registry import ArtifactStore, Registry
from loopml.timeutil import parse_time
from loopml.workspace import Workspace


@pytest.mark.slow
def test_a_challenger_that_fails_a_gate_is_not_promoted_even_if_it_wins_on_log_loss(flights_project, flights_ws,
                                                                                    tmp_path):
    (tmp_path / "events").symlink_to(flights_ws.root / "events", target_is_directory=True)
    ws = Workspace(tmp_path)
    calm = next(t for t in flights_project.behaviour if isinstance(t, MinimumFunctionality) and t.expected == "low")
    impossible = MinimumFunctionality("a calm morning is high risk", calm.rows, "high")  # no sane model passes
    strict = replace(flights_project, behaviour=(*flights_project.behaviour, impossible))
    result = LoopController(strict, ws, policy=RetrainPolicy.named("weekly-stateful")).run(
        parse_time("2013-03-01"), parse_time("2013-03-12"))
    assert result.retrainings == 2  # Mondays 4 and 11 March
    reg = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    checks = [d for d in reg.decisions("flights") if d["kind"] == "rejected"]
    assert len(checks) == 2
    for d in checks:
        gates = {g["gate"]: g for g in d["details"]["gates"]}
        assert gates["behavioural_tests"]["passed"] is False
        assert gates["behavioural_tests"]["failed"] == ["a calm morning is high risk"]
        assert {"ece", "beats_prior_baseline", "log_loss_vs_champion"} <= set(gates)
        assert "behavioural_tests" in d["details"]["failed_gates"]
    assert reg.resolve("flights", "champion") == 1
