"""Evaluate a registered version on a window: metrics with intervals beside baselines and the champion,
calibration, conformal coverage, slices and promotion gates. Used by ``loopml evaluate``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from loopml.datasets.build import build_dataset
from loopml.errors import InvalidConfig, ModelNotFound
from loopml.evaluation import (
    GroupRateBaseline,
    PriorBaseline,
    SplitConformalClassifier,
    compare_slices,
    coverage_report,
    leakage_report,
    run_behaviour_tests,
    expected_calibration_error,
    metrics_with_ci,
    reliability_curve,
    slice_metrics,
    worst_slices,
)
from loopml.events.log import EventLog
from loopml.project import Project
from loopml.registry.registry import Registry
from loopml.training.model import GBMModel

__all__ = ["Gates", "evaluate_version", "score_window"]

SLICE_COLUMNS = ("carrier", "origin", "month", "sched_dep_hour_local", "distance")
BANDS = {"sched_dep_hour_local": [0, 6, 12, 18, 24], "distance": [0, 500, 1000, 2000, 5000]}


@dataclass(frozen=True)
class Gates:
    """Promotion gates (defaults; a project may override them later).

    Parameters
    ----------
    max_log_loss_increase
        The candidate's log loss may exceed the champion's by at most this (nats).
    max_ece
        Largest allowed expected calibration error (10 equal-width bins).
    min_slice_support, max_slice_worse
        No slice with at least this many rows may be worse than the champion's by more than this.
    """

    max_log_loss_increase: float = 0.0
    max_ece: float = 0.03
    min_slice_support: int = 500
    max_slice_worse: float = 0.02


def score_window(project: Project, log: EventLog, model: GBMModel, start: datetime, end: datetime) -> pd.DataFrame:
    """The point-in-time dataset of [start, end) with a ``score`` column from ``model``."""
    frame = build_dataset(log, project, start, end)
    frame["score"] = model.predict_frame(frame) if len(frame) else np.array([], dtype=float)
    return frame


def evaluate_version(project: Project, log: EventLog, registry: Registry, ref: str | int, start: datetime,
                     end: datetime, *, alpha: float = 0.1, gates: Gates | None = None, n_boot: int = 1000,
                     seed: int = 0) -> dict[str, Any]:
    """Everything a careful reviewer asks before a model goes out, as one JSON-able document."""
    gates = gates or Gates()
    name, label = project.name, project.label.name
    mv, model = registry.load(name, ref)
    frame = score_window(project, log, model, start, end)
    rows = frame[frame[label].notna()].reset_index(drop=True)
    if len(rows) == 0:
        raise InvalidConfig(f"no labelled rows between {start.isoformat()} and {end.isoformat()}")
    y = rows[label].astype(float).to_numpy()
    p = rows["score"].to_numpy(float)
    metrics = metrics_with_ci(y, p, n_boot=n_boot, seed=seed)

    # baselines fitted on the version's own training window
    train = build_dataset(log, project, pd.Timestamp(mv.train_from).to_pydatetime(), pd.Timestamp(mv.train_to).to_pydatetime(),
                          features=[])
    known = train[train[label].notna()]
    y_train = known[label].astype(float).to_numpy()
    baselines = {
        "prior": metrics_with_ci(y, PriorBaseline().fit(y_train).predict(len(y)), n_boot=n_boot, seed=seed,
                                 metrics=("log_loss", "brier")),
        "carrier_rate": metrics_with_ci(y, GroupRateBaseline("carrier").fit(known, y_train).predict(rows), n_boot=n_boot,
                                        seed=seed, metrics=("log_loss", "roc_auc", "brier")),
    }
    champion_p = None
    try:
        champ_v = registry.resolve(name, Registry.CHAMPION)
    except ModelNotFound:
        champ_v = None
    if champ_v is not None and champ_v != mv.version:
        _, champion = registry.load(name, champ_v)
        champion_p = champion.predict_frame(rows)
        baselines["champion"] = {"version": champ_v, **metrics_with_ci(y, champion_p, n_boot=n_boot, seed=seed,
                                                                       metrics=("log_loss", "roc_auc", "brier", "ece"))}

    curve = reliability_curve(y, p, n_bins=10)
    calibration = {
        "ece_uniform": expected_calibration_error(y, p, n_bins=10, strategy="uniform"),
        "ece_quantile": expected_calibration_error(y, p, n_bins=10, strategy="quantile"),
        "reliability": {"mean_predicted": curve.mean_predicted.tolist(), "fraction_positive": curve.fraction_positive.tolist(),
                        "count": curve.count.tolist()},
    }

    conformal = _conformal(project, log, model, start, rows, y, p, alpha)
    slices_all = slice_metrics(rows, y, p, SLICE_COLUMNS, min_support=gates.min_slice_support, bands=BANDS)
    worst = worst_slices(rows, y, p, SLICE_COLUMNS, min_support=gates.min_slice_support, bands=BANDS)

    behaviour = run_behaviour_tests(model, rows, project.behaviour) if project.behaviour else []
    categorical = [c for c in project.categorical if c in model.features]
    leakage = leakage_report(rows, y, model.features, train_window=(mv.train_from, mv.train_to),
                             test_window=(start, end), categorical=categorical)

    gate_results = [{"gate": "ece", "value": calibration["ece_uniform"], "threshold": gates.max_ece,
                     "passed": bool(calibration["ece_uniform"] <= gates.max_ece)},
                    {"gate": "beats_prior_baseline", "value": metrics["log_loss"]["value"],
                     "threshold": baselines["prior"]["log_loss"]["value"],
                     "passed": bool(metrics["log_loss"]["value"] < baselines["prior"]["log_loss"]["value"])}]
    gate_results.append({"gate": "behavioural_tests", "value": sum(not b["passed"] for b in behaviour), "threshold": 0,
                         "passed": all(b["passed"] for b in behaviour)})
    gate_results.append({"gate": "no_leakage", "value": len(leakage["findings"]), "threshold": 0,
                         "passed": bool(leakage["passed"])})
    if champion_p is not None:
        champ_ll = baselines["champion"]["log_loss"]["value"]
        gate_results.append({"gate": "log_loss_vs_champion", "value": metrics["log_loss"]["value"],
                             "threshold": champ_ll + gates.max_log_loss_increase,
                             "passed": bool(metrics["log_loss"]["value"] <= champ_ll + gates.max_log_loss_increase)})
        worse = compare_slices(rows, y, p, champion_p, SLICE_COLUMNS, min_support=gates.min_slice_support,
                               max_worse=gates.max_slice_worse, bands=BANDS)
        gate_results.append({"gate": "no_slice_worse_than_champion", "value": len(worse), "threshold": 0,
                             "passed": not worse, "slices": worse})
    return {
        "model": name, "model_version": mv.version, "window": [start.isoformat(), end.isoformat()],
        "n": int(len(rows)), "unlabelled": int(len(frame) - len(rows)),
        "metrics": metrics, "baselines": baselines, "calibration": calibration,
        "conformal": conformal, "slices": {"by_value": slices_all, "worst": worst},
        "behaviour": behaviour, "leakage": leakage,
        "gates": gate_results, "passed": all(g["passed"] for g in gate_results),
    }


def _conformal(project: Project, log: EventLog, model: GBMModel, start: datetime, rows: pd.DataFrame,
               y: np.ndarray, p: np.ndarray, alpha: float) -> dict[str, Any]:
    """Split conformal sets (LAC, marginal and Mondrian by origin) calibrated on the 30 days before the window."""
    label = project.label.name
    cal_start = start - timedelta(days=30)
    cal = build_dataset(log, project, cal_start, start)
    cal = cal[cal[label].notna()]
    proba_cal = _two_class(model.predict_frame(cal))
    y_cal = cal[label].astype(int).to_numpy()
    proba = _two_class(p)
    y_int = y.astype(int)
    out: dict[str, Any] = {"alpha": alpha, "score": "lac", "calibration_window": [cal_start.isoformat(), start.isoformat()],
                           "calibration_rows": int(len(cal))}
    marginal = SplitConformalClassifier(alpha=alpha, score="lac").fit(proba_cal, y_cal)
    out["marginal"] = coverage_report(marginal.predict_sets(proba), y_int, groups=rows["origin"].to_numpy())
    mondrian = SplitConformalClassifier(alpha=alpha, score="lac").fit(proba_cal, y_cal, groups=cal["origin"].to_numpy())
    out["mondrian_origin"] = coverage_report(mondrian.predict_sets(proba, groups=rows["origin"].to_numpy()), y_int,
                                             groups=rows["origin"].to_numpy())
    out["coverage"] = out["marginal"]["coverage"]
    out["mean_set_size"] = out["marginal"]["mean_set_size"]
    out["note"] = ("coverage is guaranteed only for exchangeable data; the test window follows the calibration window in "
                   "time, so drift can lower it" + (" -- and did here" if out["coverage"] < 1 - alpha - 0.01 else ""))
    return out


def _two_class(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return np.column_stack([1 - p, p])
