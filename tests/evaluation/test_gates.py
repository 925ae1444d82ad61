"""Promotion gates: declared in the project, checked with the numbers, recorded per gate."""

from __future__ import annotations

from datetime import timedelta

import pytest

from loopml import Gates, Project
from loopml.errors import InvalidConfig
from loopml.evaluation.gates import check_gates
from loopml.features.definitions import Label, Spine


def _gate(results, name):
    return next(g for g in results if g["gate"] == name)


def test_ece_and_prior_gates_use_the_declared_thresholds():
    results = check_gates(Gates(max_ece=0.02), log_loss=0.50, prior_log_loss=0.55, ece=0.025)
    assert _gate(results, "ece") == {"gate": "ece", "value": 0.025, "threshold": 0.02, "passed": False}
    assert _gate(results, "beats_prior_baseline")["passed"] is True
    assert [g["gate"] for g in results] == ["ece", "beats_prior_baseline"]  # no champion: no champion gates


def test_champion_gates_allow_the_declared_slack_only():
    gates = Gates(max_log_loss_increase=0.01)
    ok = check_gates(gates, log_loss=0.509, prior_log_loss=0.6, ece=0.0, champion_log_loss=0.5, slices_worse=[])
    bad = check_gates(gates, log_loss=0.511, prior_log_loss=0.6, ece=0.0, champion_log_loss=0.5,
                      slices_worse=[{"column": "origin", "value": "EWR"}])
    assert _gate(ok, "log_loss_vs_champion")["passed"] and _gate(ok, "no_slice_worse_than_champion")["passed"]
    assert not _gate(bad, "log_loss_vs_champion")["passed"]
    assert _gate(bad, "no_slice_worse_than_champion")["value"] == 1


def test_failed_behavioural_tests_are_named_and_can_be_switched_off():
    behaviour = [{"name": "rain", "passed": False}, {"name": "visibility", "passed": True}]
    on = check_gates(Gates(), log_loss=0.5, prior_log_loss=0.6, ece=0.0, behaviour=behaviour)
    assert _gate(on, "behavioural_tests")["failed"] == ["rain"]
    off = check_gates(Gates(require_behaviour=False), log_loss=0.5, prior_log_loss=0.6, ece=0.0, behaviour=behaviour)
    assert "behavioural_tests" not in [g["gate"] for g in off]


def test_a_mapping_in_the_project_becomes_gates_and_typos_are_named():
    project = Project(name="p", load_events=dict, spine=Spine(source="s", id="id", time_column="t", lead=timedelta(hours=1), request_fields=()),
                      label=Label(name="y", source="s", id="id", column="y"), features=(),
                      gates={"max_ece": 0.05})
    assert project.gates == Gates(max_ece=0.05)
    with pytest.raises(InvalidConfig, match="max_ec.*Closest matches: \\['max_ece'\\]"):
        Gates.coerce({"max_ec": 0.05})
    with pytest.raises(InvalidConfig, match="max_ece must be a finite number >= 0; got -1"):
        Gates(max_ece=-1)


def test_ece_gate_does_not_hold_back_a_challenger_calibrated_no_worse_than_the_champion():
    common = dict(log_loss=0.5, prior_log_loss=0.6, champion_log_loss=0.51)
    relaxed = check_gates(Gates(max_ece=0.03), ece=0.04, champion_ece=0.05, **common)
    assert _gate(relaxed, "ece") == {"gate": "ece", "value": 0.04, "threshold": 0.05, "passed": True}
    worse = check_gates(Gates(max_ece=0.03), ece=0.06, champion_ece=0.05, **common)
    assert not _gate(worse, "ece")["passed"]
    good_champion = check_gates(Gates(max_ece=0.03), ece=0.04, champion_ece=0.01, **common)
    assert _gate(good_champion, "ece")["threshold"] == 0.03 and not _gate(good_champion, "ece")["passed"]
