"""Reports: self-contained HTML pages with plots, viewable offline.

Plots are drawn with matplotlib (Agg backend) and embedded as base64 PNG; no script, font or
stylesheet is fetched from the network.
"""

from loopml.reports.html import loop_report, training_report

__all__ = ["loop_report", "training_report"]
