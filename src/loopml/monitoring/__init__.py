"""Monitoring: performance of served predictions as labels arrive (log and wait), and feature drift.

:func:`performance_by_version` joins the prediction log with labels and reports, per model
version, log loss, ROC AUC, Brier score and the label delay.

:class:`DriftDetector` stores reference statistics per column and tests a current window against
them (Kolmogorov-Smirnov for numeric columns, chi-square for categorical ones, with Wasserstein,
Jensen-Shannon and PSI as effect sizes), adjusting p-values across columns with
:func:`adjust_p_values` (Benjamini-Hochberg by default). :func:`drift_report` does both in one call.
"""

from loopml.monitoring.alerts import Alert, AlertBook
from loopml.monitoring.drift import ColumnDrift, DriftDetector, DriftResult, drift_report
from loopml.monitoring.estimation import PerformanceEstimator, calibration_check, estimate_performance
from loopml.monitoring.multiple_testing import adjust_p_values
from loopml.monitoring.performance import performance_by_version

__all__ = [
    "Alert",
    "AlertBook",
    "ColumnDrift",
    "DriftDetector",
    "DriftResult",
    "PerformanceEstimator",
    "adjust_p_values",
    "calibration_check",
    "drift_report",
    "estimate_performance",
    "performance_by_version",
]
