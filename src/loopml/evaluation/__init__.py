"""Offline evaluation: metrics beside the baselines they must beat.

:func:`binary_metrics` computes log loss, ROC AUC and Brier score (scikit-learn's implementations);
:class:`PriorBaseline` predicts the training positive rate; :class:`GroupRateBaseline` predicts a
group's historical rate (e.g. per carrier), shrunk towards the prior when the group is small.
"""

from loopml.evaluation.baselines import GroupRateBaseline, PriorBaseline
from loopml.evaluation.behaviour import (
    Directional,
    Invariance,
    MinimumFunctionality,
    missing_feature_impact,
    noise_stability,
    run_behaviour_tests,
)
from loopml.evaluation.bootstrap import metric_with_ci, metrics_with_ci
from loopml.evaluation.calibration import (
    IdentityCalibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    ReliabilityCurve,
    TemperatureScaling,
    calibrator_from_dict,
    choose_calibrator,
    expected_calibration_error,
    reliability_curve,
)
from loopml.evaluation.conformal import (
    SplitConformalClassifier,
    SplitConformalRegressor,
    conformal_quantile,
    coverage_report,
)
from loopml.evaluation.leakage import availability_violations, leakage_report, single_feature_auc
from loopml.evaluation.metrics import binary_metrics, compare
from loopml.evaluation.slices import compare_slices, slice_metrics, worst_slices

__all__ = [
    "Directional",
    "GroupRateBaseline",
    "IdentityCalibrator",
    "Invariance",
    "IsotonicCalibrator",
    "MinimumFunctionality",
    "PlattCalibrator",
    "PriorBaseline",
    "ReliabilityCurve",
    "SplitConformalClassifier",
    "SplitConformalRegressor",
    "TemperatureScaling",
    "availability_violations",
    "binary_metrics",
    "calibrator_from_dict",
    "choose_calibrator",
    "compare",
    "compare_slices",
    "conformal_quantile",
    "coverage_report",
    "expected_calibration_error",
    "leakage_report",
    "metric_with_ci",
    "metrics_with_ci",
    "missing_feature_impact",
    "noise_stability",
    "reliability_curve",
    "run_behaviour_tests",
    "single_feature_auc",
    "slice_metrics",
    "worst_slices",
]
