"""The loop's units of work: train on a window, evaluate against baselines, register."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from loopml.datasets.build import build_dataset
from loopml.evaluation.baselines import GroupRateBaseline, PriorBaseline
from loopml.evaluation.metrics import binary_metrics
from loopml.events.log import EventLog
from loopml.features.definitions import feature_versions
from loopml.project import Project
from loopml.registry.registry import ModelVersion, Registry, git_commit
from loopml.training.calibrate import fit_calibrator, split_for_calibration
from loopml.training.model import GBMModel, train

__all__ = ["Evaluation", "evaluate_model", "fit_window", "train_and_register"]

BASELINE_GROUP = "carrier"


@dataclass(frozen=True)
class Evaluation:
    """Metrics of a model and its baselines on one window."""

    start: str
    end: str
    model: dict[str, float]
    prior: dict[str, float]
    group_rate: dict[str, float]

    def beats_baselines(self, metric: str = "log_loss") -> bool:
        return self.model[metric] < self.prior[metric] and self.model[metric] < self.group_rate[metric]

    def as_dict(self) -> dict[str, Any]:
        return {"window": [self.start, self.end], "model": self.model,
                "baselines": {"prior": self.prior, f"{BASELINE_GROUP}_rate": self.group_rate}}


def fit_window(project: Project, log: EventLog, start: datetime, end: datetime, *,
               label_cutoff: datetime | None = None, init_model: GBMModel | None = None) -> tuple[GBMModel, pd.DataFrame]:
    """Train on spine rows in [start, end) whose labels were available by ``label_cutoff`` (default ``end``)."""
    cutoff = label_cutoff or end
    frame = build_dataset(log, project, start, end, label_cutoff=cutoff)
    settings, label = project.calibration, project.label.name
    boost = frame
    if settings is not None:
        boost, held, boundary = split_for_calibration(frame, settings.fraction)
    model = train(boost, features=project.feature_names, label=label, categorical=project.categorical,
                  params=project.model_params, init_model=init_model,
                  meta={"train_from": start.isoformat(), "train_to": end.isoformat(), "label_cutoff": cutoff.isoformat()})
    if settings is not None:
        held = held[held[label].notna()]
        record = fit_calibrator(model.predict_raw_frame(held), held[label].astype(float).to_numpy(),
                                held["prediction_time"], settings)
        record["window"] = [pd.Timestamp(boundary).isoformat() if boundary is not None else None, end.isoformat()]
        model.set_calibration(record)
    return model, frame


def evaluate_model(project: Project, log: EventLog, model: GBMModel, train_frame: pd.DataFrame,
                   start: datetime, end: datetime, *, label_cutoff: datetime | None = None,
                   frame: pd.DataFrame | None = None) -> Evaluation:
    """Model vs the prior-rate and per-carrier-rate baselines (both fitted on ``train_frame``'s labels)."""
    label = project.label.name
    if frame is None:
        frame = build_dataset(log, project, start, end, label_cutoff=label_cutoff)
    rows = frame[frame[label].notna()]
    y = rows[label].astype(float).to_numpy()
    known = train_frame[train_frame[label].notna()]
    y_train = known[label].astype(float).to_numpy()
    prior = PriorBaseline().fit(y_train)
    group = GroupRateBaseline(BASELINE_GROUP).fit(known, y_train)
    return Evaluation(
        start=start.isoformat(), end=end.isoformat(),
        model=binary_metrics(y, model.predict_frame(rows)) if len(rows) else binary_metrics(np.array([]), np.array([])),
        prior=binary_metrics(y, prior.predict(len(rows))),
        group_rate=binary_metrics(y, group.predict(rows)) if len(rows) else binary_metrics(np.array([]), np.array([])),
    )


def train_and_register(project: Project, log: EventLog, registry: Registry, start: datetime, end: datetime, *,
                       label_cutoff: datetime | None = None, eval_start: datetime | None = None,
                       eval_end: datetime | None = None, eval_label_cutoff: datetime | None = None,
                       parent: int | None = None, init_model: GBMModel | None = None,
                       info: dict[str, Any] | None = None, at: datetime | None = None,
                       ) -> tuple[ModelVersion, GBMModel, Evaluation | None]:
    """Train on a window, evaluate on [eval_start, eval_end) if given, and register the version."""
    model, frame = fit_window(project, log, start, end, label_cutoff=label_cutoff, init_model=init_model)
    baselines = _baselines(project, frame)
    evaluation = None
    metrics: dict[str, Any] = {"train_rows": model.meta["train_rows"]}
    if eval_start is not None and eval_end is not None:
        evaluation = evaluate_model(project, log, model, frame, eval_start, eval_end, label_cutoff=eval_label_cutoff)
        metrics.update(evaluation.as_dict())
    onnx_info = _export_onnx(model, frame, registry)
    if project.behaviour:  # declared behavioural tests run at every training, on the training rows
        from loopml.evaluation.behaviour import run_behaviour_tests

        labelled = frame[frame[project.label.name].notna()].reset_index(drop=True)
        results = run_behaviour_tests(model, labelled, project.behaviour, sample=2000)
        metrics["behaviour"] = {"passed": all(r["passed"] for r in results),
                                "failed": [r["name"] for r in results if not r["passed"]], "n_tests": len(results)}
    if "calibration" in model.meta:
        metrics["calibration"] = {k: v for k, v in model.meta["calibration"].items() if k != "params"}
    mv = registry.register(
        project.name, model.to_bytes(), feature_hash=project.feature_hash, metrics=metrics,
        train_from=start.isoformat(), train_to=end.isoformat(),
        label_cutoff=(label_cutoff or end).isoformat(), git=git_commit(project.path), parent_version=parent,
        info={"features": project.feature_names, "feature_versions": feature_versions(project.features),
              "params": dict(project.model_params), "onnx": onnx_info, "baselines": baselines,
              **(info or {})},
        at=at.isoformat() if at is not None else None)
    return mv, model, evaluation


def _baselines(project: Project, frame: pd.DataFrame) -> dict[str, Any] | None:
    """The baselines fitted on the labels the model was trained with, stored with its version (evaluation
    then scores them without rebuilding the training window); None when there is nothing to fit."""
    label = project.label.name
    known = frame[frame[label].notna()]
    if len(known) == 0 or BASELINE_GROUP not in known.columns:
        return None
    y = known[label].astype(float).to_numpy()
    try:
        group = GroupRateBaseline(BASELINE_GROUP).fit(known, y).to_record()
    except TypeError:  # group values that JSON would not give back as they are: evaluation refits
        return None
    return {"prior": PriorBaseline().fit(y).to_record(), f"{BASELINE_GROUP}_rate": group}


def _export_onnx(model: GBMModel, frame: pd.DataFrame, registry: Registry, *, rows: int = 2000) -> dict[str, Any]:
    """Export to ONNX, verify on a sample of real rows, store the verified bytes next to the model, and record
    which engine scores the version (``serve``: ONNX Runtime only where it is the faster, see ``choose_engine``)."""
    from loopml.training.onnx import OnnxScorer, choose_engine, export_onnx

    sample = frame.sample(min(rows, len(frame)), random_state=0) if len(frame) else frame
    X = model.encode_frame(sample)
    blob, report = export_onnx(model.booster, X)
    if blob is not None:
        report["sha256"] = registry.artifacts.put(blob)
        # the engine this version is served and scored with, chosen once here so every process agrees
        report.update(choose_engine(model.predict_raw_matrix, OnnxScorer(blob).predict, X))
        report["backend"] = report["serve"]
    return report
