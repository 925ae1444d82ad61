"""Offline evaluation: metrics beside the baselines they must beat.

:func:`binary_metrics` computes log loss, ROC AUC and Brier score (scikit-learn's implementations);
:class:`PriorBaseline` predicts the training positive rate; :class:`GroupRateBaseline` predicts a
group's historical rate (e.g. per carrier), shrunk towards the prior when the group is small.
Also: bootstrap intervals, calibration, conformal prediction, slices, behavioural tests, leakage
checks and promotion gates (:class:`Gates`), one module each.

Submodules are imported on first use (``loopml.evaluation.Gates`` does not pull in scikit-learn), so
that a project file or ``import loopml`` stays fast.
"""

from __future__ import annotations

from loopml._lazy import lazy_names

_WHERE = {
    "Directional": "loopml.evaluation.behaviour",
    "Gates": "loopml.evaluation.gates",
    "GroupRateBaseline": "loopml.evaluation.baselines",
    "IdentityCalibrator": "loopml.evaluation.calibration",
    "Invariance": "loopml.evaluation.behaviour",
    "IsotonicCalibrator": "loopml.evaluation.calibration",
    "MinimumFunctionality": "loopml.evaluation.behaviour",
    "PlattCalibrator": "loopml.evaluation.calibration",
    "PriorBaseline": "loopml.evaluation.baselines",
    "ReliabilityCurve": "loopml.evaluation.calibration",
    "SplitConformalClassifier": "loopml.evaluation.conformal",
    "SplitConformalRegressor": "loopml.evaluation.conformal",
    "TemperatureScaling": "loopml.evaluation.calibration",
    "availability_violations": "loopml.evaluation.leakage",
    "binary_metrics": "loopml.evaluation.metrics",
    "calibrator_from_dict": "loopml.evaluation.calibration",
    "check_gates": "loopml.evaluation.gates",
    "choose_calibrator": "loopml.evaluation.calibration",
    "compare": "loopml.evaluation.metrics",
    "compare_slices": "loopml.evaluation.slices",
    "conformal_quantile": "loopml.evaluation.conformal",
    "coverage_report": "loopml.evaluation.conformal",
    "expected_calibration_error": "loopml.evaluation.calibration",
    "leakage_report": "loopml.evaluation.leakage",
    "lightgbm_split_points": "loopml.evaluation.behaviour",
    "metric_with_ci": "loopml.evaluation.bootstrap",
    "metrics_with_ci": "loopml.evaluation.bootstrap",
    "missing_feature_impact": "loopml.evaluation.behaviour",
    "noise_stability": "loopml.evaluation.behaviour",
    "onnx_split_points": "loopml.evaluation.behaviour",
    "reliability_curve": "loopml.evaluation.calibration",
    "run_behaviour_tests": "loopml.evaluation.behaviour",
    "scores_with_ci": "loopml.evaluation.bootstrap",
    "single_feature_auc": "loopml.evaluation.leakage",
    "slice_metrics": "loopml.evaluation.slices",
    "worst_slices": "loopml.evaluation.slices",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
