"""The CLI contract, run as a user runs it (subprocesses against one state folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
FLIGHTS = str(ROOT / "examples" / "flights")


def loopml(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "loopml.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"loopml {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")  # one demo state for the whole file (make test distributes by file)
def demo(tmp_path_factory):
    state = tmp_path_factory.mktemp("demo")
    proc = loopml("demo", "--dir", str(state), "--until", "2013-04-08", "--json")
    return state, json.loads(proc.stdout)


def test_demo_json_contract_and_model_beats_baseline(demo):
    state, doc = demo
    months = doc["months"]
    assert [m["month"] for m in months] == ["2013-03", "2013-04"]
    march = months[0]
    assert set(march) >= {"month", "model_version", "log_loss", "auc", "baseline_log_loss", "labelled"}
    assert march["labelled"] > 28_000  # every March flight was served and its label joined
    assert march["log_loss"] < march["baseline_log_loss"]
    assert march["auc"] > 0.7
    assert Path(doc["report"]).exists()
    html = Path(doc["report"]).read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    kinds = [d["kind"] for d in doc["decisions"]]
    assert kinds[:2] == ["registered", "promoted"]
    assert "trigger" in kinds and ("rejected" in kinds or kinds.count("promoted") == 2)


def test_train_beats_both_baselines_on_the_next_month(demo):
    state, _ = demo
    doc = json.loads(loopml("train", "--project", FLIGHTS, "--state", str(state), "--from", "2013-01-01",
                            "--to", "2013-03-01", "--json").stdout)
    model, prior, carrier = doc["model"], doc["baselines"]["prior"], doc["baselines"]["carrier_rate"]
    assert doc["window"][0].startswith("2013-03-01") and doc["window"][1].startswith("2013-04-01")
    for metric in ("log_loss", "brier"):
        assert model[metric] < carrier[metric] < prior[metric] + 1e-3
    assert model["auc"] > carrier["auc"] > 0.5
    assert doc["beats_baselines"] is True


def test_dataset_build_has_contract_columns(demo, tmp_path):
    state, _ = demo
    out = tmp_path / "june.parquet"
    loopml("dataset", "build", "--project", FLIGHTS, "--state", str(state), "--from", "2013-06-01",
           "--to", "2013-07-01", "--out", str(out))
    frame = pd.read_parquet(out)
    for c in ["year", "month", "day", "carrier", "flight", "origin", "dest", "tailnum", "prediction_time", "delayed",
              "origin_dep_delay_mean_1h", "origin_dep_delay_mean_3h", "origin_departures_3h",
              "carrier_arr_delay_mean_24h", "carrier_delayed_frac_7d", "route_delayed_frac_7d", "plane_prev_arr_delay",
              "origin_temp", "origin_wind_speed", "origin_visib", "origin_precip", "plane_age_years", "plane_seats",
              "sched_dep_hour_local", "day_of_week", "distance"]:
        assert c in frame.columns, c
    assert str(frame["prediction_time"].dt.tz) == "UTC"
    assert 28_000 < len(frame) < 30_000
    sched = frame["prediction_time"] + pd.Timedelta(hours=2)
    assert sched.min() >= pd.Timestamp("2013-06-01", tz="UTC") and sched.max() < pd.Timestamp("2013-07-01", tz="UTC")


def test_features_get_matches_dataset_row(demo, tmp_path):
    state, _ = demo
    doc = json.loads(loopml("features", "get", "--project", FLIGHTS, "--state", str(state), "--flight",
                            "2013-06-15:UA:1141:EWR", "--at", "2013-06-15T07:45:00Z", "--json").stdout)
    out = tmp_path / "d.parquet"
    loopml("dataset", "build", "--project", FLIGHTS, "--state", str(state), "--from", "2013-06-15T09:00:00Z",
           "--to", "2013-06-15T10:00:00Z", "--out", str(out))
    row = pd.read_parquet(out).set_index("flight_id").loc["2013-06-15:UA:1141:EWR"]
    assert row["prediction_time"] == pd.Timestamp("2013-06-15T07:45:00Z")  # 05:45 EDT departure - 2 h
    assert doc["features"]["carrier"] == "UA" and doc["features"]["origin_temp"] is not None
    for name, value in doc["features"].items():
        if value is None:
            assert pd.isna(row[name]), name
        elif isinstance(value, str):
            assert value == row[name]
        else:
            assert value == pytest.approx(row[name], abs=1e-9), name


def test_performance_reports_labelled_predictions(demo):
    state, _ = demo
    doc = json.loads(loopml("performance", "--project", FLIGHTS, "--state", str(state), "--json").stdout)
    assert doc["overall"]["labelled"] > 28_000
    assert 0.3 < doc["overall"]["log_loss"] < 0.6


@pytest.mark.parametrize(("args", "words"), [
    (["features", "get", "--flight", "2013-06-15:UA:1141:EWR", "--at", "June 15th"], ["BadTimestamp", "--at"]),
    (["features", "get", "--flight", "2013-06-15:XX:1:EWR", "--at", "2013-06-15"], ["EntityNotFound", "flight_id"]),
    (["models", "promote", "99", "--force"], ["ModelNotFound", "99"]),
    # evaluate ends at once on an error, its window still being built in a thread (exit 1, not an abort)
    (["evaluate", "--model-version", "99", "--from", "2013-06-01", "--to", "2013-07-01"], ["ModelNotFound", "99"]),
])
def test_bad_input_exits_1_with_error_type_and_message(demo, args, words):
    state, _ = demo
    proc = loopml(args[0], *args[1:], "--project", FLIGHTS, "--state", str(state), check=False)
    assert proc.returncode == 1
    for w in words:
        assert w in proc.stderr


def test_evaluate_json_contract(demo):
    state, _ = demo
    doc = json.loads(loopml("evaluate", "--project", FLIGHTS, "--state", str(state), "--model-version", "1",
                            "--from", "2013-03-01", "--to", "2013-03-15", "--json").stdout)
    for k in ("log_loss", "roc_auc", "brier", "ece"):
        v = doc["metrics"][k]
        assert v["ci"][0] <= v["value"] <= v["ci"][1], k
    assert doc["metrics"]["log_loss"]["value"] < doc["baselines"]["prior"]["log_loss"]["value"]
    assert 0.8 < doc["conformal"]["coverage"] <= 1.0 and doc["conformal"]["mean_set_size"] >= 1.0
    assert {s["column"] for s in doc["slices"]["by_value"]} >= {"carrier", "origin"}
    assert {g["gate"] for g in doc["gates"]} >= {"ece", "beats_prior_baseline"}
    assert all(isinstance(g["passed"], bool) for g in doc["gates"])
    behaviour = {b["name"]: b for b in doc["behaviour"]}
    assert behaviour["more rain does not lower P(delay)"]["passed"]  # the project declares monotone precipitation
    assert doc["leakage"]["passed"] and {"behavioural_tests", "no_leakage"} <= {g["gate"] for g in doc["gates"]}
    assert doc["gate_policy"]["max_ece"] == 0.03  # declared in examples/flights/project.py
    rob = doc["robustness"]
    assert rob["noise"]["mean_abs_change"] < 0.05  # 1% noise must not swing scores
    weather = next(m for m in rob["missing_source"] if m["group"] == "weather feed down")
    assert weather["log_loss_change"] is not None and "origin_precip" in weather["features"]
    shap = doc["explanations"]["mean_abs_shap"]
    assert set(shap) == set(doc["explanations"]["gain"]) and all(v >= 0 for v in shap.values())
    roc = doc["curves"]["roc"]
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0 and roc["fpr"] == sorted(roc["fpr"])
    assert set(doc["timings"]) >= {"features_and_scoring", "metrics_and_baselines", "gates"}
    card = Path(doc["model_card"]).read_text()
    assert "# Model card: flights v1" in card and "Intended use" in card and "conformal" in card.lower()
    assert "## Behavioural tests" in card and "## Robustness" in card and "## What drives the score" in card
    html = Path(doc["report"]).read_text()
    assert html.count("data:image/png;base64,") >= 6 and "https://" not in html


def test_promotion_gates_come_from_the_project_file(demo, tmp_path):
    """The same version, the same window: a project whose policy demands perfect calibration refuses it."""
    from loopml.registry import ArtifactStore, Registry

    state, _ = demo
    strict = tmp_path / "strict"
    strict.mkdir()
    (strict / "project.py").write_text(
        "from dataclasses import replace\n"
        "from loopml import load_project\n"
        f"project = replace(load_project({FLIGHTS!r}), gates={{'max_ece': 0.0}})\n")
    proc = loopml("models", "promote", "1", "--project", str(strict), "--state", str(state), "--from", "2013-03-25",
                  "--to", "2013-04-01", check=False)
    assert proc.returncode == 1 and "GateFailed" in proc.stderr and "ece" in proc.stderr
    reg = Registry(f"sqlite:///{state / 'registry.sqlite'}", ArtifactStore(state / "artifacts"))
    last = reg.decisions("flights")[-1]
    assert last["kind"] == "promotion_refused"
    ece = next(g for g in last["details"]["gates"] if g["gate"] == "ece")
    assert ece["threshold"] == 0.0 and ece["passed"] is False


def test_batch_predict_scores_equal_the_served_online_scores(demo, tmp_path):
    """No training/serving skew: offline features + model == what the online path served and logged."""
    from loopml.serving.predictionlog import PredictionLog

    state, _ = demo
    out = tmp_path / "scored.parquet"
    loopml("predict", "--project", FLIGHTS, "--state", str(state), "--model-version", "1", "--from", "2013-03-10",
           "--to", "2013-03-12", "--out", str(out))
    batch = pd.read_parquet(out).set_index("flight_id")
    served = PredictionLog(state / "predictions").joined()
    served = served[served["model_version"] == 1].set_index("entity_id")
    common = batch.index.intersection(served.index)
    assert len(common) > 1500
    diff = (batch.loc[common, "score"] - served.loc[common, "score"]).abs()
    assert diff.max() < 1e-9


def test_monitor_window_reports_drift_performance_and_alerts(demo):
    state, _ = demo
    doc = json.loads(loopml("monitor", "window", "--project", FLIGHTS, "--state", str(state), "--from", "2013-03-25",
                            "--to", "2013-04-01", "--json").stdout)
    assert doc["predictions"] > 6000 and doc["labelled"] == doc["predictions"]
    assert {"columns", "drifted"} <= set(doc["feature_drift"])
    assert 0.2 < doc["estimated_performance"]["log_loss"] < 0.8
    assert abs(doc["realised_performance"]["log_loss"] - doc["estimated_performance"]["log_loss"]) < 0.2
    assert doc["median_label_delay_minutes"] > 120  # labels land after the flight, which is >= 2 h after t
    assert (state / "alerts.json").exists()
    again = json.loads(loopml("monitor", "window", "--project", FLIGHTS, "--state", str(state), "--from",
                              "2013-03-25", "--to", "2013-04-01", "--json").stdout)
    assert again["alerts"]["open"] == doc["alerts"]["open"]
    assert again["alerts"]["events"] == {}  # hysteresis: an open alert does not open again


def test_models_promote_enforces_gates_and_records_force(demo):
    from loopml.registry import ArtifactStore, Registry

    state, _ = demo
    reg = Registry(f"sqlite:///{state / 'registry.sqlite'}", ArtifactStore(state / "artifacts"))
    # a model evaluated on a window it was not made for: a strict gate (ECE) is likely to fail there;
    # whatever the outcome, the decision and its gate numbers are recorded
    proc = loopml("models", "promote", "1", "--project", FLIGHTS, "--state", str(state), "--from", "2013-03-25",
                  "--to", "2013-04-08", check=False)
    last = reg.decisions("flights")[-1]
    if proc.returncode == 0:
        assert last["kind"] == "promoted" and all(g["passed"] for g in last["details"]["evidence"]["gates"])
    else:
        assert "GateFailed" in proc.stderr and last["kind"] == "promotion_refused"
        forced = loopml("models", "promote", "1", "--project", FLIGHTS, "--state", str(state), "--from", "2013-03-25",
                        "--to", "2013-04-08", "--force")
        assert "forced" in forced.stdout
        last = reg.decisions("flights")[-1]
        assert last["kind"] == "promoted" and last["details"]["evidence"]["forced"] is True
    assert reg.resolve("flights", "champion") == 1
