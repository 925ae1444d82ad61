"""Datasets: label spines, point-in-time training sets and time-based splits.

A spine has one row per prediction (a flight, at its prediction time). :func:`build_dataset` joins
the label -- only where it was available by a cutoff, if one is given -- and every feature as of
the row's prediction time, through the offline executor.
"""

from loopml.datasets.build import build_dataset, build_spine, time_split

__all__ = ["build_dataset", "build_spine", "time_split"]
