"""ONNX fast path: exported, verified against LightGBM, used when verified and faster, native otherwise with a reason."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from loopml.errors import InvalidConfig
from loopml.registry import ArtifactStore, Registry
from loopml.training import train
from loopml.training.onnx import choose_engine, export_onnx


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
    _, loaded = reg.load("m", mv.version, backend="onnx")
    assert loaded.backend == "onnx"
    np.testing.assert_allclose(loaded.predict_frame(frame), model.predict_frame(frame), atol=1e-5)
    (tmp_path / "a" / info["sha256"][:2] / info["sha256"]).unlink()
    _, fallback = reg.load("m", mv.version, backend="onnx")
    assert fallback.backend == "native" and "ONNX load failed" in fallback.backend_reason


def test_registration_records_the_faster_engine_and_every_load_follows_it(frame, tmp_path):
    from loopml.loop.jobs import _export_onnx

    model = train(frame, features=["x", "z", "c"], label="y", categorical=["c"], params={"n_estimators": 40})
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}", ArtifactStore(tmp_path / "a"))
    info = _export_onnx(model, frame, reg)
    t = info["timing_us"]
    onnx_faster = t["onnx_row"] < t["native_row"] and t["onnx_batch"] < t["native_batch"]
    assert info["serve"] == info["backend"] == ("onnx" if onnx_faster else "native") and info["sha256"]
    for recorded in ("onnx", "native"):  # whatever was measured, a load follows the record (no timing at load)
        mv = reg.register("m", model.to_bytes(), feature_hash="h", metrics={},
                          info={"onnx": {**info, "serve": recorded, "reason": f"recorded: {recorded}"}})
        _, auto = reg.load("m", mv.version)
        assert auto.backend == recorded and auto.backend_reason == f"recorded: {recorded}"
        for asked in ("onnx", "native"):
            assert reg.load("m", mv.version, backend=asked)[1].backend == asked
    native = reg.load("m", mv.version, backend="native")[1]
    assert native.backend == "native" and native.backend_reason.startswith("LightGBM asked for")
    # asked for ONNX where the export was refused: served natively, and the reason says both
    failed = reg.register("m", model.to_bytes(), feature_hash="h", metrics={},
                          info={"onnx": {"backend": "native", "reason": "ONNX export failed: boom"}})
    forced = reg.load("m", failed.version, backend="onnx")[1]
    assert forced.backend == "native" and "ONNX asked for" in forced.backend_reason and "boom" in forced.backend_reason
    assert reg.load("m", failed.version)[1].backend_reason == "ONNX export failed: boom"
    # a version registered before the choice was recorded is served as it was: with its verified ONNX export
    old = {k: v for k, v in info.items() if k not in ("serve", "reason", "timing_us")}
    mv = reg.register("m", model.to_bytes(), feature_hash="h", metrics={}, info={"onnx": old})
    assert reg.load("m", mv.version)[1].backend == "onnx"
    with pytest.raises(InvalidConfig, match="backend must be one of"):
        reg.load("m", mv.version, backend="tensorrt")


def test_choose_engine_serves_onnx_only_where_it_is_faster_at_both_sizes():
    X = np.zeros((5, 3))
    slow = lambda x: time.sleep(0.002)  # noqa: E731
    fast = lambda x: None  # noqa: E731
    assert choose_engine(slow, fast, X, repeats=3)["serve"] == "onnx"
    picked = choose_engine(fast, slow, X, repeats=3)
    assert picked["serve"] == "native" and "faster than ONNX Runtime" in picked["reason"]
    assert picked["timing_us"]["onnx_row"] >= 2000 > picked["timing_us"]["native_row"]
    one_row_only = lambda x: time.sleep(0.002 if len(x) > 1 else 0)  # noqa: E731 - faster at one row, not at 32
    assert choose_engine(lambda x: time.sleep(0.001), one_row_only, X, repeats=3)["serve"] == "native"
