"""Reports: self-contained HTML pages with plots, viewable offline.

Plots are drawn with matplotlib (Agg backend) and embedded as base64 PNG; no script, font or
stylesheet is fetched from the network.
"""

from loopml.reports.card import evaluation_report, model_card
from loopml.reports.html import loop_report, training_report

__all__ = ["evaluation_report", "loop_report", "model_card", "training_report"]
