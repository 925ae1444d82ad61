"""Behavioural tests (CheckList) on small LightGBM models trained on simulated flights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from loopml.errors import FeatureNotFound, InvalidConfig, SchemaError
from loopml.evaluation import (
    Directional,
    Invariance,
    MinimumFunctionality,
    missing_feature_impact,
    noise_stability,
    run_behaviour_tests,
)
from loopml.training import train

FEATURES = ["precip", "hour", "distance", "flight"]
PARAMS = {"n_estimators": 50, "num_leaves": 7, "learning_rate": 0.1, "min_child_samples": 100,
          "num_threads": 1, "deterministic": True, "seed": 0}


def _flights(seed: int, n: int = 4000, *, precip_sign: float = 1.0, flight: str = "constant") -> pd.DataFrame:
    """Delay probability rises with precipitation (falls, with ``precip_sign=-1``) and with the hour.

    ``flight`` is "constant" (the model never sees it vary), "noise" (varies, irrelevant) or
    "signal" (flights numbered below 500 are delay-prone, so a model learns to use the number).
    """
    rng = np.random.default_rng(seed)
    precip = np.where(rng.uniform(size=n) < 0.6, 0.0, rng.exponential(1.0, size=n))
    hour = rng.integers(5, 23, size=n).astype(float)
    distance = rng.uniform(100.0, 3000.0, size=n)
    number = rng.integers(1, 2000, size=n).astype(float)
    logit = -1.3 + precip_sign * 1.2 * precip + 0.08 * (hour - 14) + 0.0002 * (distance - 1500)
    if flight == "signal":
        logit = logit + 1.5 * (number < 500)
    y = (rng.uniform(size=n) < expit(logit)).astype(int)
    if flight == "constant":
        number = np.full(n, 100.0)
    return pd.DataFrame({"precip": precip, "hour": hour, "distance": distance, "flight": number, "y": y})


def _train(frame: pd.DataFrame, **extra):
    return train(frame, features=FEATURES, label="y", params={**PARAMS, **extra})


@pytest.fixture(scope="module")
def models():
    return {
        "right": _train(_flights(0)),
        "monotone": _train(_flights(0), monotone_constraints=[1, 0, 0, 0]),
        "wrong": _train(_flights(0, precip_sign=-1.0)),
        "uses_flight": _train(_flights(0, flight="signal")),
    }


@pytest.fixture(scope="module")
def rows():
    return _flights(1, flight="noise")  # real-looking rows to perturb: flight numbers vary here


RAIN = Directional("more rain does not lower P(delay)", "precip", delta=0.5, direction="not_decrease",
                   max_failure_rate=0.05)


def _shuffle(values: pd.Series) -> np.ndarray:
    return np.random.default_rng(7).permutation(values.to_numpy())


def test_directional_precipitation_passes_for_the_true_relation_and_fails_for_the_wrong_sign(models, rows):
    (right,) = run_behaviour_tests(models["right"], rows, [RAIN])
    assert right["passed"] and right["n"] == 4000 and right["failure_rate"] <= 0.05
    strict = Directional("rain, monotone", "precip", delta=0.5, direction="not_decrease",
                         max_failure_rate=0.0)
    (mono,) = run_behaviour_tests(models["monotone"], rows, [strict])
    assert mono["passed"] and mono["failure_rate"] == 0.0 and mono["examples"] == []
    (wrong,) = run_behaviour_tests(models["wrong"], rows, [RAIN])
    assert not wrong["passed"] and wrong["failure_rate"] > 0.5
    assert len(wrong["examples"]) == 5
    drops = [e["score_before"] - e["score_after"] for e in wrong["examples"]]
    assert drops == sorted(drops, reverse=True) and drops[-1] > 0  # worst first, all lowered the score
    assert all(e["value_after"] == pytest.approx(e["value_before"] + 0.5) for e in wrong["examples"])
    assert "failed" in wrong["message"] and "5.0% allowed" in wrong["message"]


def test_invariance_passes_for_a_model_that_never_saw_the_flight_vary_and_fails_for_one_using_it(
    models, rows
):
    test = Invariance("flight number is irrelevant", "flight", _shuffle, tolerance=0.01)
    (ok,) = run_behaviour_tests(models["right"], rows, [test])
    assert ok["passed"] and ok["failure_rate"] == 0.0 and ok["n"] > 3900  # rows whose number changed
    (bad,) = run_behaviour_tests(models["uses_flight"], rows, [test])
    assert not bad["passed"] and bad["failure_rate"] > 0.3
    e = bad["examples"][0]
    assert abs(e["score_after"] - e["score_before"]) > 0.01 and e["value_after"] != e["value_before"]
    replace = Invariance("every flight is 1999", "flight", 1999.0)
    (replaced,) = run_behaviour_tests(models["uses_flight"], rows, [replace])
    assert not replaced["passed"]


def test_minimum_functionality_with_obvious_rows(models, rows):
    storm = MinimumFunctionality("storm in the evening", [{"precip": 5.0, "hour": 20.0}, {"precip": 4.0}],
                                 "high")
    dry = MinimumFunctionality("dry morning", [{"precip": 0.0, "hour": 6.0, "distance": 1500.0}], "low")
    band = MinimumFunctionality("dry is not certain", [{"precip": 0.0}], lambda p: 0.02 < p < 0.6)
    results = run_behaviour_tests(models["right"], rows, [storm, dry, band])
    assert [(r["kind"], r["passed"], r["n"]) for r in results] == [("minimum_functionality", True, 2),
                                                                 ("minimum_functionality", True, 1),
                                                                 ("minimum_functionality", True, 1)]
    (wrong,) = run_behaviour_tests(models["wrong"], rows, [storm])
    assert not wrong["passed"] and wrong["failure_rate"] == 1.0
    first = wrong["examples"][0]
    assert first["row"] == {"precip": 5.0, "hour": 20.0} and first["score"] < 0.5


def test_sampling_is_seeded_and_a_test_that_checks_nothing_fails(models, rows):
    a = run_behaviour_tests(models["wrong"], rows, [RAIN], sample=500, seed=3)
    b = run_behaviour_tests(models["wrong"], rows, [RAIN], sample=500, seed=3)
    assert a == b and a[0]["n"] == 500
    (empty,) = run_behaviour_tests(models["right"], rows.assign(flight=100.0),
                                   [Invariance("no-op", "flight", 100.0)])
    assert (empty["passed"], empty["n"]) == (False, 0) and np.isnan(empty["failure_rate"])
    assert "checked no row" in empty["message"]


def test_declarations_and_runs_reject_bad_inputs_with_their_values(models, rows):
    with pytest.raises(InvalidConfig, match=r"direction must be one of .* got 'not_decreasing'"):
        Directional("x", "precip", delta=1.0, direction="not_decreasing")
    with pytest.raises(InvalidConfig, match="delta must be a non-zero finite number; got 0"):
        Directional("x", "precip", delta=0)
    with pytest.raises(InvalidConfig, match=r"perturb must be a function .* got list \[1, 2\]"):
        Invariance("x", "flight", [1, 2])
    with pytest.raises(InvalidConfig, match=r"expected must be one of \['high', 'low'\]; got 'hi'"):
        MinimumFunctionality("x", [{"precip": 1.0}], "hi")
    with pytest.raises(FeatureNotFound, match=r"'precipitation' is not a feature of the model.*\['precip'\]"):
        run_behaviour_tests(models["right"], rows, [Directional("x", "precipitation", delta=1.0)])
    with pytest.raises(FeatureNotFound, match=r"row key 'precip_mm'"):
        run_behaviour_tests(models["right"], rows, [MinimumFunctionality("x", [{"precip_mm": 3.0}], "high")])
    with pytest.raises(InvalidConfig, match=r"more than once: \['more rain does not lower P\(delay\)'\]"):
        run_behaviour_tests(models["right"], rows, [RAIN, RAIN])
    with pytest.raises(SchemaError, match="must be numeric to add delta"):
        run_behaviour_tests(models["right"], rows.assign(precip=rows["precip"].astype(str)), [RAIN])


def test_noise_stability_is_small_for_small_noise_and_grows_with_it(models, rows):
    small = noise_stability(models["right"], rows, ["hour", "distance"], scale=0.01)
    large = noise_stability(models["right"], rows, ["hour", "distance"], scale=0.5)
    assert small["n"] == 4000 and small["mean_abs_change"] < 0.005
    assert large["mean_abs_change"] > 5 * small["mean_abs_change"]
    assert [p["feature"] for p in small["per_feature"]] == ["hour", "distance"]
    assert small == noise_stability(models["right"], rows, ["hour", "distance"], scale=0.01)  # seeded
    with pytest.raises(InvalidConfig, match=r"scale must be a positive .* got 0"):
        noise_stability(models["right"], rows, ["hour"], scale=0)


def test_missing_feature_impact_reports_the_change_when_an_important_group_is_removed(models, rows):
    out = missing_feature_impact(models["right"], rows, {"weather": ["precip"], "flight": ["flight"]},
                                 y=rows["y"])
    weather, flight = out
    assert weather["group"] == "weather" and weather["mean_abs_change"] > 0.02
    assert weather["log_loss_change"] > 0.01
    assert weather["log_loss_after"] == pytest.approx(weather["log_loss_before"] + weather["log_loss_change"])
    # the model never split on the (constant) flight number, so losing it changes nothing
    assert flight["mean_abs_change"] == 0.0 and flight["log_loss_change"] == 0.0
    (no_labels,) = missing_feature_impact(models["right"], rows, {"weather": ["precip"]})
    assert no_labels["log_loss_change"] is None and no_labels["mean_abs_change"] == weather["mean_abs_change"]


class _Counting:
    """A model wrapper that records how many rows it was asked to score."""

    def __init__(self, model):
        self.model, self.rows = model, 0
        self.features, self.categories = model.features, model.categories

    def predict_frame(self, frame):
        self.rows += len(frame)
        return self.model.predict_frame(frame)

    def predict_rows(self, rows):
        self.rows += len(rows)
        return self.model.predict_rows(rows)


def test_given_scores_and_rescoring_only_changed_rows_give_the_same_results_with_fewer_rows_scored(models, rows):
    model = models["right"]
    frame = rows.assign(precip=rows["precip"].where(np.arange(len(rows)) % 4 != 0))  # a quarter missing
    scores = model.predict_frame(frame)
    tests = [RAIN, Invariance("flight number is irrelevant", "flight", _shuffle, tolerance=0.01)]
    plain = run_behaviour_tests(model, frame, tests, sample=1000, seed=2)
    counting = _Counting(model)
    assert run_behaviour_tests(counting, frame, tests, sample=1000, seed=2, scores=scores) == plain
    assert counting.rows == plain[0]["n"] + plain[1]["n"]  # the perturbed rows only, no "before" scoring

    noise = noise_stability(model, frame, ["precip", "hour"], scale=0.05)
    counting = _Counting(model)
    assert noise_stability(counting, frame, ["precip", "hour"], scale=0.05, scores=scores) == noise
    # missing precipitation stays missing, so those rows keep their score without being scored again
    assert counting.rows == (3000 + 4000) + 4000

    groups = {"weather": ["precip"], "time": ["hour", "distance"]}
    missing = missing_feature_impact(model, frame, groups, y=frame["y"])
    counting = _Counting(model)
    assert missing_feature_impact(counting, frame, groups, y=frame["y"], scores=scores) == missing
    assert counting.rows == 3000 + 4000
    with pytest.raises(SchemaError, match=r"one score per row of the frame \(4000\); got shape \(3\,\)"):
        noise_stability(model, frame, ["hour"], scores=[0.1, 0.2, 0.3])


def test_the_sample_is_the_one_frame_sample_draws_whatever_the_index(models, rows):
    from loopml.evaluation.behaviour import _sample

    frame = rows.set_axis(np.arange(len(rows))[::-1] * 3)  # labels unlike positions
    got, at = _sample(frame, 700, 11)
    expected = frame.sample(n=700, random_state=11)
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(frame.iloc[at], expected)


def _split_point_cases(model, frame):
    tests = [RAIN, Directional("later is not safer", "hour", delta=1.0, direction="not_decrease", max_failure_rate=1.0),
             Invariance("flight number is irrelevant", "flight", _shuffle, tolerance=0.01)]
    return (lambda m, **kw: run_behaviour_tests(m, frame, tests, sample=2000, seed=1, **kw),
            lambda m, **kw: noise_stability(m, frame, ["precip", "hour", "distance"], scale=0.02, **kw))


@pytest.mark.parametrize("name", ["right", "uses_flight"])
def test_split_points_skip_rows_on_the_same_side_of_every_threshold_with_the_same_results(models, rows, name):
    from loopml.evaluation import lightgbm_split_points

    model = models[name]
    frame = rows.assign(precip=rows["precip"].where(np.arange(len(rows)) % 5 != 0))
    points = lightgbm_split_points(model.booster, model.features, model.features)
    assert set(points) == set(FEATURES) and all(np.all(np.diff(t) > 0) for t in points.values())
    for probe in _split_point_cases(model, frame):
        plain, counting = _Counting(model), _Counting(model)
        assert probe(counting, split_points=points) == probe(plain)
        assert counting.rows < plain.rows  # some moves stay between thresholds


def test_onnx_split_points_are_the_float32_thresholds_onnx_runtime_compares(models, rows):
    from loopml.evaluation import lightgbm_split_points, onnx_split_points
    from loopml.evaluation.behaviour import _same_side
    from loopml.training.onnx import export_onnx

    model = models["uses_flight"]
    blob, report = export_onnx(model.booster, model.encode_frame(rows.head(500)))
    assert blob is not None, report
    points = onnx_split_points(blob, model.features, model.features)
    native = {f: t.astype(np.float32)
              for f, t in lightgbm_split_points(model.booster, model.features, model.features).items()}
    assert {f: t.tolist() for f, t in points.items()} == {f: np.unique(t).tolist() for f, t in native.items()}
    onnx_model = type(model).from_bytes(model.to_bytes())
    onnx_model.use_onnx(blob)
    frame = rows.assign(precip=rows["precip"].where(np.arange(len(rows)) % 5 != 0))
    for probe in _split_point_cases(onnx_model, frame):
        plain, counting = _Counting(onnx_model), _Counting(onnx_model)
        assert probe(counting, split_points=points) == probe(plain)
        assert counting.rows < plain.rows
    # a value nudged to either side of a float32 threshold: the skipped rows really keep their score
    t = points["distance"][len(points["distance"]) // 2]
    near = np.float32(t) + np.array([-2, -1, 0, 1, 2], dtype=np.float32) * np.spacing(np.float32(t))
    probe = rows.head(5).assign(distance=near.astype(np.float64))
    for step in (np.spacing(np.float32(t)), -np.spacing(np.float32(t))):
        moved = probe.assign(distance=probe["distance"] + float(step))
        same = _same_side(probe["distance"], moved["distance"], points["distance"])
        scores, after = onnx_model.predict_frame(probe), onnx_model.predict_frame(moved)
        assert np.all(scores[same] == after[same])
        assert not same.all()  # some nudges crossed t
