"""Redefining a feature gives it a new identity: a new stored state beside the old, and a model trained on
the old definition is refused instead of being served values it never saw."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from loopml.events import Replayer
from loopml.features import OnlineExecutor, SQLiteOnlineStore
from loopml.features.definitions import Aggregate, Latest, changed_features, feature_versions
from loopml.timeutil import parse_time

H = timedelta(hours=1)


def test_a_feature_version_changes_with_its_window_source_or_column_and_only_its_own():
    a = Aggregate("dep_delay_mean_3h", "departures", "origin", "mean", 3 * H, column="dep_delay")
    b = Latest("visib", "weather", "origin", "visib")
    before = feature_versions([a, b])
    for changed in (replace(a, window=6 * H), replace(a, column="arr_delay"), replace(a, source="arrivals")):
        after = feature_versions([changed, b])
        assert after["dep_delay_mean_3h"] != before["dep_delay_mean_3h"]
        assert after["visib"] == before["visib"]
        assert changed_features(before, [changed, b]) == {"dep_delay_mean_3h": "redefined"}
    assert changed_features(before, [b]) == {"dep_delay_mean_3h": "removed"}
    assert changed_features(before, [b, a]) == {}  # order does not matter


def _fill(project_features, store, log, t):
    ex = OnlineExecutor(project_features, store=store)
    replayer = Replayer(log, ex.sources, start=t - timedelta(days=8), columns=ex.columns())
    for source, batch in replayer.advance_to(t):
        ex.update(source, batch)
    ex.flush()


def test_old_and_new_definitions_keep_separate_states_in_one_store(flights_project, flights_ws, tmp_path):
    feats = [f for f in flights_project.features if f.name in ("origin_dep_delay_mean_3h", "origin_visib")]
    longer = [replace(f, window=6 * H) if isinstance(f, Aggregate) else f for f in feats]
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    t = parse_time("2013-07-04T15:00:00Z")
    request = {"origin": "EWR"}
    _fill(feats, store, flights_ws.log, t)
    old_values = OnlineExecutor(feats, store=store).get(request, t)
    _fill(longer, store, flights_ws.log, t)  # a new deployment backfills the redefined feature
    assert OnlineExecutor(feats, store=store).get(request, t) == old_values  # the old state is untouched
    new_values = OnlineExecutor(longer, store=store).get(request, t)
    assert new_values["origin_visib"] == old_values["origin_visib"]  # unchanged definition, same state
    assert new_values["origin_dep_delay_mean_3h"] != old_values["origin_dep_delay_mean_3h"]


def test_serving_refuses_a_model_whose_features_were_redefined(flights_project):
    from loopml.errors import SchemaError

    info = {"feature_versions": feature_versions(flights_project.features)}
    flights_project.check_model_features(info, version=3)  # same definitions: fine
    redefined = replace(flights_project, features=tuple(
        replace(f, window=6 * H) if f.name == "origin_dep_delay_mean_3h" else f for f in flights_project.features))
    with pytest.raises(SchemaError, match="v3 was trained with feature definitions.*origin_dep_delay_mean_3h"):
        redefined.check_model_features(info, version=3)
    redefined.check_model_features({}, version=1)  # versions registered before feature versions existed


def test_serving_refuses_state_that_no_current_definition_can_read(flights_project, flights_ws, tmp_path):
    from loopml.errors import SchemaError
    from loopml.serving.factory import _check_state_layout

    feats = [f for f in flights_project.features if f.name == "origin_dep_delay_mean_3h"]
    longer = [replace(f, window=6 * H) for f in feats]
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    _fill(feats, store, flights_ws.log, parse_time("2013-07-04T15:00:00Z"))
    _check_state_layout(OnlineExecutor(feats, store=store), store, flights_ws)  # its own state: fine
    with pytest.raises(SchemaError, match="Rebuild it with `loopml materialize"):
        _check_state_layout(OnlineExecutor(longer, store=store), store, flights_ws)
    empty = SQLiteOnlineStore(tmp_path / "empty.sqlite")
    _check_state_layout(OnlineExecutor(longer, store=empty), empty, flights_ws)  # nothing stored yet: fine
