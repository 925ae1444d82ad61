"""Evaluate a registered version on a window: metrics with intervals beside baselines and the champion,
calibration, conformal coverage, slices and promotion gates. Used by ``loopml evaluate``.

The expensive steps are done once and shared: one point-in-time dataset covers the conformal
calibration window and the evaluated window (they are adjacent), scored in one call; the bootstrap
draws its resamples once for the model and its baselines; the behavioural and robustness probes reuse
the window's scores for their unperturbed rows and score only the rows a perturbation changed.
TreeSHAP (LightGBM's C code, which releases the GIL) runs in a thread beside the Python-bound
baselines, bootstrap and probes; it reads only its own sample of the rows, so nothing changes.
:func:`prefetch_window` lets a caller have DuckDB (which releases the GIL too) build the evaluated
window's dataset while it imports LightGBM, scikit-learn and SciPy (this module imports them only when
it evaluates), and the behavioural tests run in a thread beside the robustness probes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopml.datasets.build import build_dataset
from loopml.errors import InvalidConfig, ModelNotFound
from loopml.evaluation.gates import Gates, check_gates

if TYPE_CHECKING:
    from loopml.evaluation.baselines import GroupRateBaseline, PriorBaseline
    from loopml.events.log import EventLog
    from loopml.project import Project
    from loopml.registry.registry import ModelVersion, Registry
    from loopml.training.model import GBMModel

__all__ = ["Gates", "WindowPrefetch", "evaluate_version", "prefetch_window", "score_window"]

SLICE_COLUMNS = ("carrier", "origin", "month", "sched_dep_hour_local", "distance")
BANDS = {"sched_dep_hour_local": [0, 6, 12, 18, 24], "distance": [0, 500, 1000, 2000, 5000]}
CALIBRATION_DAYS = 30


def score_window(project: Project, log: EventLog, model: GBMModel, start: datetime, end: datetime) -> pd.DataFrame:
    """The point-in-time dataset of [start, end) with a ``score`` column from ``model``."""
    frame = build_dataset(log, project, start, end)
    frame["score"] = model.predict_frame(frame) if len(frame) else np.array([], dtype=float)
    return frame


class WindowPrefetch:
    """The point-in-time dataset :func:`evaluate_version` scores, being built in a thread (see :func:`prefetch_window`)."""

    def __init__(self, project: Project, log: EventLog, start: datetime, end: datetime) -> None:
        self.key = self._key(project, log, start, end)
        self.used = False
        # a pool's (non-daemon) thread: a daemon thread still inside DuckDB when the interpreter shuts down
        # aborts the process; `loopml evaluate` ends without waiting for it anyway (cli.main)
        pool = ThreadPoolExecutor(1, thread_name_prefix="loopml-prefetch")
        self.future: Future[pd.DataFrame] = pool.submit(
            build_dataset, log, project, start - timedelta(days=CALIBRATION_DAYS), end)
        pool.shutdown(wait=False)

    def result(self, project: Project, log: EventLog, start: datetime, end: datetime) -> pd.DataFrame | None:
        """The dataset, if it was prefetched for these arguments (else None: build it afresh).

        Single use: the frame is handed over once (the evaluation writes its scores into it), and a
        second call gets None, so a log that has grown since is read afresh.
        """
        if self.used or self._key(project, log, start, end) != self.key:
            return None
        self.used = True
        return self.future.result()

    @staticmethod
    def _key(project: Project, log: EventLog, start: datetime, end: datetime) -> tuple[Any, ...]:
        # the log by its folder: a Workspace hands out a new EventLog object on every access
        return id(project), str(getattr(log, "root", id(log))), start, end


def prefetch_window(project: Project, log: EventLog, start: datetime, end: datetime) -> WindowPrefetch:
    """Start building the dataset ``evaluate_version(project, log, ..., start, end, prefetched=...)`` scores.

    DuckDB builds it without holding the GIL, so a caller can import what evaluation needs (LightGBM,
    scikit-learn, SciPy: about a second) meanwhile; the frame is the one ``evaluate_version`` would build.
    """
    return WindowPrefetch(project, log, start, end)


def evaluate_version(project: Project, log: EventLog, registry: Registry, ref: str | int, start: datetime,
                     end: datetime, *, alpha: float = 0.1, gates: Gates | None = None, n_boot: int = 1000,
                     seed: int = 0, prefetched: WindowPrefetch | None = None,
                     before_intervals: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Everything a careful reviewer asks before a model goes out, as one JSON-able document.

    ``gates`` defaults to the project's (``Project.gates``). ``timings`` gives wall seconds per stage and
    ``cpu_timings`` this process's CPU seconds (all threads) per stage. ``prefetched``: the evaluated
    dataset already being built (:func:`prefetch_window` with the same project, log, start and end).

    The bootstrap intervals come last. ``before_intervals``, if given, is called just before them with
    the document so far: every section but ``baselines`` and the gates, and ``metrics`` with the model's
    point values (the very floats of the final document) and ``ci`` None. ``loopml evaluate`` hands it
    to a process that draws the report's plots meanwhile.
    """
    from loopml.evaluation.behaviour import run_behaviour_tests
    from loopml.evaluation.bootstrap import METRICS, score_values, scores_with_ci
    from loopml.evaluation.calibration import expected_calibration_error, reliability_curve
    from loopml.evaluation.leakage import leakage_report
    from loopml.evaluation.slices import compare_slices, slice_metrics, worst_slices
    from loopml.registry.registry import Registry

    gates = Gates.coerce(gates if gates is not None else project.gates)
    clock, cpu, timings, cpu_timings = time.perf_counter(), time.process_time(), {}, {}

    def lap(stage: str) -> None:
        nonlocal clock, cpu
        now, now_cpu = time.perf_counter(), time.process_time()
        timings[stage], cpu_timings[stage] = round(now - clock, 3), round(now_cpu - cpu, 3)
        clock, cpu = now, now_cpu
    name, label = project.name, project.label.name
    mv, model = registry.load(name, ref)
    # the conformal calibration window ends where the evaluated one starts: build and score both at once
    cal_start = start - timedelta(days=CALIBRATION_DAYS)
    both = prefetched.result(project, log, start, end) if prefetched is not None else None
    if both is None:
        both = build_dataset(log, project, cal_start, end)
    both["score"] = model.predict_frame(both) if len(both) else np.array([], dtype=float)
    in_window = (both[project.spine.time_column] >= _utc(start)).to_numpy()
    frame, cal = both[in_window], both[~in_window]
    rows = frame[frame[label].notna()].reset_index(drop=True)
    if len(rows) == 0:
        raise InvalidConfig(f"no labelled rows between {start.isoformat()} and {end.isoformat()}")
    y = rows[label].astype(float).to_numpy()
    p = rows["score"].to_numpy(float)
    background = ThreadPoolExecutor(1, thread_name_prefix="loopml-evaluate")
    shap = background.submit(_explanations, model, _shap_sample(rows))
    background.shutdown(wait=False)  # its thread ends with the task, whatever fails in between
    lap("features_and_scoring")

    prior, carrier = _fitted_baselines(project, log, mv)
    scores = {"model": p, "prior": prior.predict(len(y)), "carrier_rate": carrier.predict(rows)}
    wanted: dict[str, tuple[str, ...]] = {"model": METRICS, "prior": ("log_loss", "brier"),
                                          "carrier_rate": ("log_loss", "roc_auc", "brier")}
    champion_p = None
    try:
        champ_v = registry.resolve(name, Registry.CHAMPION)
    except ModelNotFound:
        champ_v = None
    if champ_v is not None and champ_v != mv.version:
        _, champion = registry.load(name, champ_v)
        champion_p = scores["champion"] = champion.predict_frame(rows)
        wanted["champion"] = ("log_loss", "roc_auc", "brier", "ece")
    lap("baseline_scores")
    curve = reliability_curve(y, p, n_bins=10)
    calibration = {
        "ece_uniform": expected_calibration_error(y, p, n_bins=10, strategy="uniform"),
        "ece_quantile": expected_calibration_error(y, p, n_bins=10, strategy="quantile"),
        "reliability": {"mean_predicted": curve.mean_predicted.tolist(), "fraction_positive": curve.fraction_positive.tolist(),
                        "count": curve.count.tolist()},
    }

    calibration["recalibration"] = {k: v for k, v in model.meta["calibration"].items() if k != "params"} \
        if "calibration" in model.meta else None
    if calibration["recalibration"] is not None:
        raw = model.predict_raw_frame(rows)
        calibration["ece_uniform_before_recalibration"] = expected_calibration_error(y, raw, n_bins=10)
    conformal = _conformal(project, cal, cal_start, start, rows, y, p, alpha)
    lap("calibration_and_conformal")
    slices_all = slice_metrics(rows, y, p, SLICE_COLUMNS, min_support=gates.min_slice_support, bands=BANDS)
    worst = worst_slices(rows, y, p, SLICE_COLUMNS, min_support=gates.min_slice_support, bands=BANDS)

    lap("slices")
    splits = _split_points(model, registry, mv.info)
    # the behavioural tests in a thread beside the robustness probes: both mostly wait on the scoring engine
    # (ONNX Runtime or LightGBM's C API: no GIL), each on its own rows, so the two use both cores and give what they give one after the other
    tests_pool = ThreadPoolExecutor(1, thread_name_prefix="loopml-behaviour")
    behaviour_tests = tests_pool.submit(run_behaviour_tests, model, rows.copy(), project.behaviour, scores=p,
                                        split_points=splits) if project.behaviour else None
    tests_pool.shutdown(wait=False)
    robustness = _robustness(project, model, rows, y, p, splits)
    behaviour = behaviour_tests.result() if behaviour_tests is not None else []
    lap("behaviour_and_robustness")
    categorical = [c for c in project.categorical if c in model.features]
    leakage = leakage_report(rows, y, model.features, train_window=(mv.train_from, mv.train_to),
                             test_window=(start, end), categorical=categorical)
    lap("leakage")
    explanations = shap.result()
    curves = _curves(y, p)
    lap("explanations_and_curves")
    doc: dict[str, Any] = {
        "model": name, "model_version": mv.version, "window": [start.isoformat(), end.isoformat()],
        "n": len(rows), "unlabelled": int(len(frame) - len(rows)),
        "metrics": None, "baselines": None, "calibration": calibration,
        "conformal": conformal, "slices": {"by_value": slices_all, "worst": worst},
        "behaviour": behaviour, "robustness": robustness, "leakage": leakage, "explanations": explanations,
        "curves": curves, "gate_policy": gates.to_dict(),
    }
    if before_intervals is not None:
        values = score_values(y, {"model": p}, metrics={"model": wanted["model"]})["model"]
        before_intervals({**doc, "metrics": {k: {"value": v, "ci": None} for k, v in values.items()}})

    # one set of bootstrap draws for all: each result is what metrics_with_ci gives for that vector alone
    with_ci = scores_with_ci(y, scores, metrics=wanted, n_boot=n_boot, seed=seed)
    metrics = with_ci.pop("model")
    baselines: dict[str, Any] = {"prior": with_ci["prior"], "carrier_rate": with_ci["carrier_rate"]}
    if champion_p is not None:
        baselines["champion"] = {"version": champ_v, **with_ci["champion"]}
    lap("metrics_and_baselines")

    champion_ll = worse = None
    if champion_p is not None:
        champion_ll = baselines["champion"]["log_loss"]["value"]
        worse = compare_slices(rows, y, p, champion_p, SLICE_COLUMNS, min_support=gates.min_slice_support,
                               max_worse=gates.max_slice_worse, bands=BANDS)
    gate_results = check_gates(gates, log_loss=metrics["log_loss"]["value"],
                               prior_log_loss=baselines["prior"]["log_loss"]["value"], ece=calibration["ece_uniform"],
                               behaviour=behaviour, leakage=leakage, champion_log_loss=champion_ll,
                               champion_ece=baselines["champion"]["ece"]["value"] if champion_p is not None else None,
                               slices_worse=worse)
    lap("gates")
    doc.update(metrics=metrics, baselines=baselines, gates=gate_results, passed=all(g["passed"] for g in gate_results),
               timings=timings, cpu_timings=cpu_timings)
    return doc


def _fitted_baselines(project: Project, log: EventLog, mv: ModelVersion) -> tuple[PriorBaseline, GroupRateBaseline]:
    """The prior-rate and per-carrier-rate baselines of version ``mv``, fitted on the labels it was trained with
    (those of its training window available at its label cutoff): as stored with it at training, else here."""
    from loopml.evaluation.baselines import GroupRateBaseline, PriorBaseline

    stored = (mv.info or {}).get("baselines") or {}
    if "prior" in stored and stored.get("carrier_rate", {}).get("column") == "carrier":
        return PriorBaseline.from_record(stored["prior"]), GroupRateBaseline.from_record(stored["carrier_rate"])
    # a version registered before baselines were stored: refitted on the labels available at its cutoff, as
    # at training (built after the scoring, not beside it: two DuckDB threads and two ONNX ones on two cores
    # cost ~0.5 s more CPU than they saved in wall)
    label = project.label.name
    cutoff = pd.Timestamp(mv.label_cutoff or mv.train_to).to_pydatetime()
    train = build_dataset(log, project, pd.Timestamp(mv.train_from).to_pydatetime(),
                          pd.Timestamp(mv.train_to).to_pydatetime(), label_cutoff=cutoff, features=[])
    known = train[train[label].notna()]
    y_train = known[label].astype(float).to_numpy()
    return PriorBaseline().fit(y_train), GroupRateBaseline("carrier").fit(known, y_train)


def _utc(t: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(t)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


def _conformal(project: Project, cal: pd.DataFrame, cal_start: datetime, start: datetime, rows: pd.DataFrame,
               y: np.ndarray, p: np.ndarray, alpha: float) -> dict[str, Any]:
    """Split conformal sets (LAC, marginal and Mondrian by origin) calibrated on ``cal`` (scored rows of the
    ``CALIBRATION_DAYS`` before the window)."""
    from loopml.evaluation.conformal import SplitConformalClassifier, coverage_report

    label = project.label.name
    cal = cal[cal[label].notna()]
    proba_cal = _two_class(cal["score"].to_numpy(float))
    y_cal = cal[label].astype(int).to_numpy()
    proba = _two_class(p)
    y_int = y.astype(int)
    out: dict[str, Any] = {"alpha": alpha, "score": "lac", "calibration_window": [cal_start.isoformat(), start.isoformat()],
                           "calibration_rows": len(cal)}
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


def _split_points(model: GBMModel, registry: Registry, info: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The thresholds the model's scorer compares each numeric feature with (see ``split_points``)."""
    from loopml.evaluation.behaviour import lightgbm_split_points, onnx_split_points

    numeric = [f for f in model.features if f not in model.categories]
    if model.backend == "onnx":
        sha = (info.get("onnx") or {}).get("sha256")
        return onnx_split_points(registry.artifacts.get(sha), model.features, numeric) if sha else None
    return lightgbm_split_points(model.booster, model.features, numeric) if model.booster is not None else None


def _robustness(project: Project, model: GBMModel, rows: pd.DataFrame, y: np.ndarray, p: np.ndarray,
                splits: dict[str, np.ndarray] | None = None, *, sample: int = 1000) -> dict[str, Any]:
    """Score stability under 1% noise on numeric features, and the cost of each source's features going missing."""
    from loopml.evaluation.behaviour import missing_feature_impact, noise_stability

    take = rows.sample(min(sample, len(rows)), random_state=0) if len(rows) > sample else rows
    at = rows.index.get_indexer(take.index)
    y_take, p_take = y[at], p[at]
    take = take.reset_index(drop=True)
    numeric = [f for f in model.features if f not in model.categories and pd.api.types.is_numeric_dtype(take[f])]
    by_source: dict[str, list[str]] = {}
    for f in project.features:
        source = getattr(f, "source", "request")
        if f.name in model.features:
            by_source.setdefault(source, []).append(f.name)
    return {"noise": noise_stability(model, take, numeric, scale=0.01, scores=p_take, split_points=splits)
            if numeric else None,
            "missing_source": missing_feature_impact(model, take, {f"{s} feed down": fs for s, fs in by_source.items()},
                                                     y=y_take, scores=p_take)}


def _shap_sample(rows: pd.DataFrame, *, sample: int = 200) -> pd.DataFrame:
    """The rows SHAP explains: ``sample`` of them at random (seeded), copied so no other stage shares them."""
    return (rows.sample(sample, random_state=0) if len(rows) > sample else rows).copy()


def _explanations(model: GBMModel, take: pd.DataFrame) -> dict[str, Any]:
    """Global importance (split gain) and mean |SHAP| per feature on ``take`` (see ``_shap_sample``)."""
    contrib = model.contributions_frame(take)
    mean_abs = contrib.drop(columns="bias").abs().mean().sort_values(ascending=False)
    return {"gain": dict(sorted(model.importance("gain").items(), key=lambda kv: -kv[1])),
            "mean_abs_shap": {k: float(v) for k, v in mean_abs.items()}, "shap_rows": len(take),
            "note": "SHAP values (LightGBM pred_contrib) are contributions to the raw log-odds, before recalibration"}


def _curves(y: np.ndarray, p: np.ndarray, *, points: int = 200) -> dict[str, Any]:
    """ROC and precision-recall curves (scikit-learn), thinned to about ``points`` points for the report."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)

    def thin(*arrays: np.ndarray) -> list[list[float]]:
        idx = np.unique(np.linspace(0, len(arrays[0]) - 1, min(points, len(arrays[0]))).astype(int))
        return [np.round(a[idx], 5).tolist() for a in arrays]

    fpr_t, tpr_t = thin(fpr, tpr)
    rec_t, prec_t = thin(recall, precision)
    return {"roc": {"fpr": fpr_t, "tpr": tpr_t}, "pr": {"recall": rec_t, "precision": prec_t},
            "positive_rate": float(np.mean(y))}
