from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopml.errors import ArtifactCorrupted, ModelNotFound, RegistryError
from loopml.registry import ArtifactStore, Registry
from loopml.training import GBMModel, train


@pytest.fixture()
def tiny_model():
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["a", "b", "c"], size=n)})
    frame["y"] = ((frame["x"] + (frame["c"] == "a")) > 0.5).astype(float)
    return train(frame, features=["x", "c"], label="y", categorical=["c"], params={"n_estimators": 5}), frame


def _registry(tmp_path):
    return Registry(f"sqlite:///{tmp_path / 'reg.sqlite'}", ArtifactStore(tmp_path / "artifacts"))


def test_register_load_round_trips_scores_and_lineage(tmp_path, tiny_model):
    model, frame = tiny_model
    reg = _registry(tmp_path)
    mv = reg.register("m", model.to_bytes(), feature_hash="f" * 64, metrics={"log_loss": 0.3},
                      train_from="2013-01-01", train_to="2013-03-01", git="abc")
    assert mv.version == 1 and mv.metrics == {"log_loss": 0.3} and mv.train_to == "2013-03-01"
    reg.promote("m", 1)
    got_mv, loaded = reg.load("m", "champion")
    assert got_mv.version == 1 and "champion" in got_mv.aliases
    np.testing.assert_array_equal(loaded.predict_frame(frame), model.predict_frame(frame))
    assert loaded.categories == {"c": ["a", "b", "c"]}


def test_versions_increase_and_promote_rollback_swap(tmp_path, tiny_model):
    model, _ = tiny_model
    reg = _registry(tmp_path)
    for _ in range(3):
        reg.register("m", model.to_bytes(), feature_hash="h", metrics={})
    assert [v.version for v in reg.versions("m")] == [1, 2, 3]
    reg.promote("m", 1)
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback("m")
    reg.promote("m", 3, reason="better", evidence={"log_loss": 0.1})
    assert reg.resolve("m", "champion") == 3 and reg.resolve("m", "previous") == 1
    assert reg.rollback("m").version == 1
    assert reg.resolve("m", "champion") == 1 and reg.resolve("m", "previous") == 3
    kinds = [d["kind"] for d in reg.decisions("m")]
    assert kinds.count("promoted") == 2 and kinds[-1] == "rolled_back"
    promoted = [d for d in reg.decisions("m") if d["kind"] == "promoted"][-1]
    assert promoted["details"]["evidence"] == {"log_loss": 0.1}


def test_tampered_artifact_is_refused(tmp_path, tiny_model):
    model, _ = tiny_model
    reg = _registry(tmp_path)
    mv = reg.register("m", model.to_bytes(), feature_hash="h", metrics={})
    path = tmp_path / "artifacts" / mv.artifact_sha256[:2] / mv.artifact_sha256
    path.write_bytes(path.read_bytes().replace(b'"format"', b'"formaT"'))
    with pytest.raises(ArtifactCorrupted, match=mv.artifact_sha256):
        reg.load("m", 1)


def test_unknown_version_and_alias_errors_list_what_exists(tmp_path, tiny_model):
    model, _ = tiny_model
    reg = _registry(tmp_path)
    reg.register("m", model.to_bytes(), feature_hash="h", metrics={})
    with pytest.raises(ModelNotFound, match=r"no version 7; versions: \[1\]"):
        reg.get("m", 7)
    with pytest.raises(ModelNotFound, match="alias 'champion'"):
        reg.get("m", "champion")


@pytest.mark.services
def test_registry_on_postgresql(tiny_model, tmp_path):
    """The production backend: same code path on PostgreSQL (127.0.0.1:5432, database test)."""
    import sqlalchemy as sa

    model, frame = tiny_model
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    engine = sa.create_engine(url)
    with engine.begin() as con:
        for t in ("model_versions", "model_aliases", "decisions"):
            con.execute(sa.text(f"DROP TABLE IF EXISTS {t}"))
    reg = Registry(url, ArtifactStore(tmp_path / "artifacts"))
    name = "pg-model"
    mv = reg.register(name, model.to_bytes(), feature_hash="h", metrics={"auc": 0.9})
    reg.promote(name, mv.version)
    _, loaded = reg.load(name, "champion")
    np.testing.assert_array_equal(loaded.predict_frame(frame), model.predict_frame(frame))


def test_model_artifact_is_json_not_pickle(tiny_model):
    model, _ = tiny_model
    blob = model.to_bytes()
    assert blob.startswith(b"{")
    assert GBMModel.from_bytes(blob).features == ["x", "c"]


def test_monotone_param_is_applied_and_checked():
    rng = np.random.default_rng(1)
    n = 2000
    frame = pd.DataFrame({"rain": rng.uniform(0, 1, n), "x": rng.normal(size=n)})
    frame["y"] = (rng.uniform(size=n) < 0.2 + 0.5 * frame["rain"] * (np.sin(12 * frame["rain"]) > 0)).astype(float)
    model = train(frame, features=["rain", "x"], label="y", params={"n_estimators": 30, "monotone": {"rain": 1}})
    grid = pd.DataFrame({"rain": np.linspace(0, 1, 101), "x": 0.0})
    assert (np.diff(model.predict_frame(grid)) >= -1e-12).all()
    from loopml.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match=r"unknown feature\(s\) \['snow'\]"):
        train(frame, features=["rain", "x"], label="y", params={"monotone": {"snow": 1}})
