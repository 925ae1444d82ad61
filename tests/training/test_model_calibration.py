"""A recalibrator is part of the model: stored in its bytes, applied by every predict path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopml.errors import InvalidConfig
from loopml.training.calibrate import Calibration, fit_calibrator, split_for_calibration
from loopml.training.model import GBMModel, train


def _frame(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    z = rng.normal(size=n)
    p = 1 / (1 + np.exp(-(1.5 * x)))
    return pd.DataFrame({"x": x, "z": z, "c": rng.choice(["a", "b"], size=n),
                         "y": (rng.random(n) < p).astype(float),
                         "prediction_time": pd.date_range("2013-01-01", periods=n, freq="min", tz="UTC")})


def _model(frame: pd.DataFrame) -> GBMModel:
    return train(frame, features=["x", "z", "c"], label="y", categorical=["c"],
                 params={"n_estimators": 40, "num_leaves": 15, "verbosity": -1})


def test_calibration_travels_in_the_artifact_and_changes_scores_the_same_way_for_frames_and_rows():
    frame = _frame()
    model = _model(frame)
    raw = model.predict_raw_frame(frame)
    # a deliberately distorted calibration: Platt fitted against squashed targets
    record = fit_calibrator(raw, (raw > 0.8).astype(float), frame["prediction_time"],
                            Calibration(candidates=("platt",), min_rows=100))
    model.set_calibration(record)
    again = GBMModel.from_bytes(model.to_bytes())
    rows = frame[["x", "z", "c"]].head(50).to_dict("records")
    assert again.meta["calibration"]["kind"] == "platt"
    np.testing.assert_allclose(again.predict_frame(frame.head(50)), model.predict_frame(frame.head(50)))
    np.testing.assert_allclose(again.predict_rows(rows), again.predict_frame(frame.head(50)))
    assert np.max(np.abs(again.predict_frame(frame) - raw)) > 0.05  # the calibrator is really applied
    np.testing.assert_allclose(again.predict_raw_frame(frame), raw)


def test_identity_wins_when_recalibration_does_not_help_on_later_data():
    frame = _frame(6000)
    model = _model(frame.head(3000))
    held = frame.tail(3000)
    record = fit_calibrator(model.predict_raw_frame(held), held["y"].to_numpy(), held["prediction_time"],
                            Calibration(candidates=("identity",), min_rows=100))
    assert record["kind"] == "identity"
    model.set_calibration(record)
    np.testing.assert_allclose(model.predict_frame(held), model.predict_raw_frame(held))


def test_too_few_held_out_rows_store_identity_with_the_reason():
    frame = _frame(200)
    model = _model(frame)
    record = fit_calibrator(model.predict_raw_frame(frame), frame["y"].to_numpy(), frame["prediction_time"],
                            Calibration())
    assert record["kind"] == "identity" and "min_rows=1000" in record["reason"]


def test_split_holds_out_the_last_fraction_of_the_time_span():
    frame = _frame(1000)
    boost, held, boundary = split_for_calibration(frame, 0.2)
    assert len(boost) + len(held) == 1000
    assert boost["prediction_time"].max() < boundary <= held["prediction_time"].min()
    assert 190 <= len(held) <= 210


def test_calibration_settings_are_validated():
    with pytest.raises(InvalidConfig, match="fraction must be a number in \\(0, 0.5\\); got 0.7"):
        Calibration(fraction=0.7)
    with pytest.raises(InvalidConfig, match="unknown calibrator 'beta'"):
        Calibration(candidates=("beta",))


def test_shap_contributions_sum_to_the_raw_log_odds():
    frame = _frame()
    model = _model(frame)
    contrib = model.contributions_frame(frame.head(100))
    assert list(contrib.columns) == ["x", "z", "c", "bias"]
    raw = model.predict_raw_frame(frame.head(100))
    np.testing.assert_allclose(contrib.sum(axis=1).to_numpy(), np.log(raw / (1 - raw)), atol=1e-6)
    # x drives the label, z is noise: x must matter more
    assert contrib["x"].abs().mean() > 5 * contrib["z"].abs().mean()
    rows = frame[["x", "z", "c"]].head(3).to_dict("records")
    np.testing.assert_allclose(model.contributions_rows(rows).to_numpy(), contrib.head(3).to_numpy())
    assert set(model.importance()) == {"x", "z", "c"}
