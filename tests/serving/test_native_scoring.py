"""A natively served model scores one row through LightGBM's one-row C API: exactly Booster.predict's scores."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from loopml.registry import ArtifactStore, Registry
from loopml.training.model import ROW_LOOP_MAX, GBMModel


@pytest.fixture(scope="module")
def native(served_ws):
    reg = Registry(served_ws.registry_url, ArtifactStore(served_ws.artifacts))
    mv = reg.get("flights", "champion")
    model = GBMModel.from_bytes(reg.artifacts.get(mv.artifact_sha256))  # no ONNX attached: the native path
    assert model.backend == "native"
    return model


def _rows(model: GBMModel, n: int, seed: int) -> list[dict]:
    """Random requests' features: numbers, NaN and None, known and unknown categories."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = {}
        for f in model.features:
            if rng.random() < 0.15:
                row[f] = None
            elif f in model.categories:
                row[f] = str(rng.choice([*model.categories[f], "never-seen"]))
            else:
                row[f] = float(rng.choice([np.nan, rng.normal(0, 50), 0.0, rng.integers(-5, 500)]))
        rows.append(row)
    return rows


def test_one_row_scores_equal_booster_predict_exactly(native):
    rows = _rows(native, 300, seed=1)
    expected = native.booster.predict(native.encode_rows(rows), num_threads=1)
    got = np.array([native.predict_rows([r])[0] for r in rows])
    assert native._one_row is not None  # scored through the one-row C API, not Booster.predict
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(native.predict_rows(rows), expected)  # more than ROW_LOOP_MAX: Booster.predict


def test_small_batches_go_row_by_row_with_the_same_scores(native, monkeypatch):
    rows = _rows(native, ROW_LOOP_MAX, seed=3)
    expected = native.booster.predict(native.encode_rows(rows), num_threads=1)
    calls = []
    monkeypatch.setattr(native.booster, "predict", lambda *a, **k: calls.append(a))
    for n in (2, 7, ROW_LOOP_MAX):  # every row of a micro-batch through the one-row C API, at its own offset
        np.testing.assert_array_equal(native.predict_rows(rows[:n]), expected[:n])
    assert calls == []  # Booster.predict was not needed


def test_one_row_scorer_gives_the_same_scores_from_many_threads(native):
    rows = _rows(native, 200, seed=2)
    expected = [float(native.booster.predict(native.encode_rows([r]), num_threads=1)[0]) for r in rows]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda r: float(native.predict_rows([r])[0]), rows * 4))
    assert got == expected * 4


def test_a_multi_output_booster_is_scored_by_booster_predict_and_wrong_widths_are_refused():
    import lightgbm as lgb

    from loopml.errors import SchemaError
    from loopml.training.model import _OneRow

    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 3))
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
                        lgb.Dataset(X, label=rng.integers(0, 3, 300)), num_boost_round=5)
    model = GBMModel(booster, ["a", "b", "c"], {})
    # the one-row C API would write 3 scores a row into a buffer of one: never used for such a booster
    np.testing.assert_array_equal(model.predict_raw_matrix(X[:4]), booster.predict(X[:4], num_threads=1))
    assert model._one_row is False
    binary = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1},
                       lgb.Dataset(X, label=(X[:, 0] > 0).astype(float)), num_boost_round=5)
    with pytest.raises(SchemaError, match="rows have 6 values, the model has 3 features"):
        _OneRow(binary, 3).predict(np.zeros((2, 6)))
