"""Per-prediction explanations from the Predictor: SHAP contributions that add up to the score."""

from __future__ import annotations

import math

import pytest

from loopml.errors import SchemaError
from loopml.serving.factory import build_predictor

REQUEST = {"carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH", "tailnum": "N14228",
           "sched_dep": "2013-03-01T14:15:00Z"}


@pytest.fixture(scope="module")
def predictor(flights_project, served_ws):
    return build_predictor(flights_project, served_ws)


def test_contributions_add_up_to_the_served_score_and_name_every_feature(predictor, flights_project):
    ex = predictor.explain(REQUEST)
    assert set(ex["contributions"]) == set(flights_project.feature_names)
    total = ex["bias"] + sum(ex["contributions"].values())
    assert total == pytest.approx(ex["raw_log_odds"], abs=1e-9)
    if "calibration" not in predictor.model.meta:  # no recalibrator: the score is the sigmoid of the sum
        assert ex["score"] == pytest.approx(1 / (1 + math.exp(-total)), abs=1e-5)  # ONNX scores in float32
    served = predictor.predict_many([REQUEST], request_ids=["explain-check"])[0]
    assert ex["score"] == pytest.approx(served.score, abs=1e-12)
    magnitudes = [abs(v) for v in ex["contributions"].values()]
    assert magnitudes == sorted(magnitudes, reverse=True)  # most influential first


def test_explaining_a_bad_request_names_the_field(predictor):
    with pytest.raises(SchemaError, match="origin"):
        predictor.explain({k: v for k, v in REQUEST.items() if k != "origin"})
