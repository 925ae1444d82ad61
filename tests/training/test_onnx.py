"""ONNX fast path: exported, verified against LightGBM, used when verified, native otherwise with a reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopml.registry import ArtifactStore, Registry
from loopml.training import train
from loopml.training.onnx import export_onnx


@pytest.fixture()
def frame():
    rng = np.random.default_rng(3)
    n = 3000
    f = pd.DataFrame({"x": rng.normal(size=n), "z": rng.uniform(size=n), "c": rng.choice(list("abcdef"), n)})
    f.loc[rng.uniform(size=n) < 0.1, "x"] = np.nan
    f["y"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-(f["x"].fillna(0) + (f["c"] == "b") - 0.5)))).astype(float)
    return f


def test_export_agrees_with_native_within_1e5_including_categorical_and_missing(frame):
    model = train(frame, features=["x", "z", "c"], label="y", categorical=["c"], params={"n_estimators": 40})
    X = model.encode_frame(frame)
    blob, report = export_onnx(model.booster, X)
    assert blob is not None and report["backend"] == "onnx" and report["max_abs_diff"] <= 1e-5
    native = model.predict_frame(frame)
    model.use_onnx(blob)
    fast = model.predict_frame(frame)
    assert np.abs(fast - native).max() <= 1e-5
    assert model.predict_rows([{"x": None, "z": 0.5, "c": "zz"}])[0] == pytest.approx(
        model.predict_frame(pd.DataFrame({"x": [np.nan], "z": [0.5], "c": ["zz"]}))[0], abs=1e-12)


def test_export_that_disagrees_is_refused_with_the_reason(frame):
    model = train(frame, features=["x", "z", "c"], label="y", categorical=["c"], params={"n_estimators": 40})
    blob, report = export_onnx(model.booster, model.encode_frame(frame), tolerance=0.0)
    if report["max_abs_diff"] == 0.0:
        pytest.skip("bit-identical export; nothing to refuse")
    assert blob is None and report["backend"] == "native" and "differ" in report["reason"]


def test_registry_serves_verified_onnx_and_falls_back_natively_when_it_is_missing(frame, tmp_path):
    from loopml.loop.jobs import _export_onnx

    model = train(frame, features=["x", "z", "c"], label="y", categorical=["c"], params={"n_estimators": 40})
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}", ArtifactStore(tmp_path / "a"))
    info = _export_onnx(model, frame, reg)
    mv = reg.register("m", model.to_bytes(), feature_hash="h", metrics={}, info={"onnx": info})
    _, loaded = reg.load("m", mv.version)
    assert loaded.backend == "onnx"
    np.testing.assert_allclose(loaded.predict_frame(frame), model.predict_frame(frame), atol=1e-5)
    (tmp_path / "a" / info["sha256"][:2] / info["sha256"]).unlink()
    _, fallback = reg.load("m", mv.version)
    assert fallback.backend == "native" and "ONNX load failed" in fallback.backend_reason
