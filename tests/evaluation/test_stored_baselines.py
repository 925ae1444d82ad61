"""Baselines are fitted at training on the labels the model saw, stored with the version, and scored by evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from loopml.datasets.build import build_dataset
from loopml.evaluation.baselines import GroupRateBaseline, PriorBaseline
from loopml.loop import assess, jobs
from loopml.loop.jobs import train_and_register
from loopml.registry import ArtifactStore, Registry
from loopml.timeutil import parse_time

pytestmark = pytest.mark.slow


def test_baseline_records_round_trip_exactly():
    rng = np.random.default_rng(0)
    import pandas as pd

    frame = pd.DataFrame({"carrier": rng.choice(["UA", "AA", "B6"], 500)})
    y = (rng.uniform(size=500) < 0.3).astype(float)
    group = GroupRateBaseline("carrier", m=7).fit(frame, y)
    back = GroupRateBaseline.from_record(group.to_record())
    test = pd.DataFrame({"carrier": ["UA", "B6", "ZZ", None]})
    assert np.array_equal(back.predict(test), group.predict(test))
    prior = PriorBaseline().fit(y)
    assert PriorBaseline.from_record(prior.to_record()).predict(3).tolist() == prior.predict(3).tolist()
    with pytest.raises(TypeError, match="text group values"):
        GroupRateBaseline("n").fit(pd.DataFrame({"n": [1, 2, 1]}), np.array([0.0, 1.0, 1.0])).to_record()


def test_evaluation_scores_the_stored_baselines_and_refits_only_for_older_versions(
        flights_project, flights_ws, tmp_path, monkeypatch):
    p = flights_project
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}", ArtifactStore(tmp_path / "a"))
    t0, t1 = parse_time("2013-02-01"), parse_time("2013-03-01")
    mv, _, _ = train_and_register(p, flights_ws.log, reg, t0, t1)

    # stored: fitted on the training window's labels that were available at the cutoff, as the model was
    trained = build_dataset(flights_ws.log, p, t0, t1, label_cutoff=t1, features=[])
    known = trained[trained[p.label.name].notna()]
    y = known[p.label.name].astype(float).to_numpy()
    stored = reg.get(p.name, mv.version).info["baselines"]
    assert stored == {"prior": PriorBaseline().fit(y).to_record(),
                      "carrier_rate": GroupRateBaseline("carrier").fit(known, y).to_record()}

    built = []
    real = assess.build_dataset

    def spy(log, project, start, end, **kw):
        built.append(kw.get("features"))
        return real(log, project, start, end, **kw)

    monkeypatch.setattr(assess, "build_dataset", spy)
    start, end = parse_time("2013-03-01"), parse_time("2013-03-08")
    doc = assess.evaluate_version(p, flights_ws.log, reg, mv.version, start, end, n_boot=20)
    assert [] not in built  # the training window was not rebuilt
    frame = real(flights_ws.log, p, start, end)
    rows_y = frame[frame[p.label.name].notna()][p.label.name].astype(float).to_numpy()
    rate = stored["prior"]["rate"]
    want = -np.mean(rows_y * np.log(rate) + (1 - rows_y) * np.log(1 - rate))
    assert doc["baselines"]["prior"]["log_loss"]["value"] == pytest.approx(want, rel=1e-12)

    # a version registered before baselines were stored: refitted on the same labels (those available at its
    # cutoff), so its baselines are the stored ones
    monkeypatch.setattr(jobs, "_baselines", lambda project, frame: None)
    old, _, _ = train_and_register(p, flights_ws.log, reg, t0, t1)
    assert reg.get(p.name, old.version).info["baselines"] is None
    built.clear()
    doc_old = assess.evaluate_version(p, flights_ws.log, reg, old.version, start, end, n_boot=20)
    assert [] in built
    assert doc_old["baselines"]["prior"] == doc["baselines"]["prior"]
    assert doc_old["baselines"]["carrier_rate"] == doc["baselines"]["carrier_rate"]
