"""Monitoring: performance of served predictions as labels arrive (log and wait).

:func:`performance_by_version` joins the prediction log with labels and reports, per model
version, log loss, ROC AUC, Brier score and the label delay.
"""

from loopml.monitoring.performance import performance_by_version

__all__ = ["performance_by_version"]
