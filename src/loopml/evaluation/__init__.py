"""Offline evaluation: metrics beside the baselines they must beat.

:func:`binary_metrics` computes log loss, ROC AUC and Brier score (scikit-learn's implementations);
:class:`PriorBaseline` predicts the training positive rate; :class:`GroupRateBaseline` predicts a
group's historical rate (e.g. per carrier), shrunk towards the prior when the group is small.
"""

from loopml.evaluation.baselines import GroupRateBaseline, PriorBaseline
from loopml.evaluation.metrics import binary_metrics, compare

__all__ = ["GroupRateBaseline", "PriorBaseline", "binary_metrics", "compare"]
