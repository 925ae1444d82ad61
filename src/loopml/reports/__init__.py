"""Reports: self-contained HTML pages with plots, viewable offline.

Plots are drawn with matplotlib (Agg backend) and embedded as base64 PNG; no script, font or
stylesheet is fetched from the network. The loop report also shows the 2013 retraining-policy
experiment from its committed summary (:mod:`loopml.reports.policies`).
"""

from loopml.reports.card import evaluation_report, model_card
from loopml.reports.html import loop_report, training_report
from loopml.reports.policies import policies_section, read_policy_results

__all__ = ["evaluation_report", "loop_report", "model_card", "policies_section", "read_policy_results",
           "training_report"]
