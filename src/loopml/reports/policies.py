"""The 2013 retraining-policy experiment in the loop report.

Four full-year replays (``bench/bench_policies.py``) take far too long to run inside ``loopml demo``,
so the benchmark writes a small committed summary next to the flights project
(``examples/flights/results/``): ``policies.csv``, one row per policy with the commit and the date
it was measured at, and ``policies-weekly.csv``, weekly log loss, ROC AUC and ECE per policy. The loop
report renders that summary as a section, draws its plot from the weekly CSV and overlays the
current run's own weekly log loss where the two cover the same weeks.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopml.errors import SchemaError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PolicyResults", "policies_section", "read_policy_results"]

#: Where ``bench/bench_policies.py`` writes the summary, in a source checkout of loopml.

_SUMMARY_COLUMNS = ("policy", "log_loss", "vs_static", "auc", "ece", "retrainings", "promotions", "rejections",
                    "rejected_why", "retrain_cpu_s", "replay_cpu_s", "wall_s", "weeks_beating_static", "commit",
                    "measured")
_WEEKLY_COLUMNS = ("policy", "week", "log_loss", "auc", "ece")


@dataclass(frozen=True)
class PolicyResults:
    """The committed summary of the experiment: one row per policy, and weekly metrics per policy."""

    summary: pd.DataFrame
    weekly: pd.DataFrame

    @property
    def commits(self) -> list[str]:
        return sorted({str(c) for c in self.summary["commit"]})

    @property
    def measured(self) -> list[str]:
        return sorted({str(m) for m in self.summary["measured"]})


def _read(path: Path, required: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.read_csv(path, dtype={"commit": str, "week": str, "measured": str})
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SchemaError(f"{path} lacks the column(s) {missing}; it has {list(frame.columns)}. "
                          "Rewrite it with bench/bench_policies.py --summarize.")
    return frame


def read_policy_results(folder: Path) -> PolicyResults:
    """Read ``policies.csv`` and ``policies-weekly.csv`` from ``folder``.

    Raises FileNotFoundError if either file is missing and SchemaError if one lacks a column.
    """
    summary = _read(folder / "policies.csv", _SUMMARY_COLUMNS)
    weekly = _read(folder / "policies-weekly.csv", _WEEKLY_COLUMNS)
    return PolicyResults(summary=summary, weekly=weekly)


def _percent(v: Any, signed: bool = False) -> str:
    if v is None or math.isnan(v):
        return "—"
    return f"{v:+.2%}" if signed else f"{v:.0%}"


def _seconds(v: Any) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:,.0f}"


def _plot(weekly: pd.DataFrame, current: Sequence[Mapping[str, Any]]) -> str:
    import pandas as pd

    from loopml.reports.html import _figure, _png

    fig, ax = _figure()
    weeks = sorted(weekly["week"].unique())
    for policy, g in weekly.groupby("policy", sort=False):
        ax.plot(pd.to_datetime(g["week"]), g["log_loss"], marker=".", linewidth=1, label=str(policy))
    mine = [w for w in current if w.get("week") in set(weeks) and w.get("log_loss") is not None]
    if mine:
        ax.plot(pd.to_datetime([w["week"] for w in mine]), [w["log_loss"] for w in mine], color="black",
                linestyle="--", marker="x", linewidth=2, label="this run")
    ax.set_ylabel("weekly log loss (lower is better)")
    ax.set_title("Retraining policies on 2013: weekly log loss of served predictions")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def policies_section(folder: Path | None, *, current_weekly: Sequence[Mapping[str, Any]] = ()) -> str:
    """HTML section with the measured table and weekly plot; says so when the summary is missing.

    ``current_weekly`` is the report's own weekly series (``{"week": "YYYY-MM-DD", "log_loss": ...}``);
    it is overlaid on the plot for the weeks the experiment covers.
    """
    from loopml.reports.html import _table

    if folder is None:
        return ""
    try:
        res = read_policy_results(folder)
    except FileNotFoundError as exc:
        return ("<h2>Retraining policies on 2013</h2><p class=muted>Not measured yet: "
                f"{html.escape(str(getattr(exc, 'filename', None) or exc))} is missing. "
                "Run <code>python bench/bench_policies.py</code> (30-90 minutes) to write it.</p>")
    except SchemaError as exc:
        return f"<h2>Retraining policies on 2013</h2><p class=muted>Cannot show the experiment: {html.escape(str(exc))}</p>"
    s = res.summary
    title = (f"Retraining policies on 2013 (measured {', '.join(res.measured)}, "
             f"commit {', '.join(res.commits)})")
    rows = [{**r, "vs_static": _percent(r["vs_static"], signed=True) if r["policy"] != "static" else "—",
             "weeks_beating_static": _percent(r["weeks_beating_static"]),
             "rejected_why": r["rejected_why"] if isinstance(r["rejected_why"], str) else "",
             **{k: _seconds(r[k]) for k in ("retrain_cpu_s", "replay_cpu_s", "wall_s")}}
            for r in s.to_dict("records")]
    parts = [f"<h2>{html.escape(title)}</h2>",
             ("<p class=muted>Each policy replayed March–December 2013 (every flight served through the online "
              "path, its label joined from the prediction log) with <code>bench/bench_policies.py</code>; these "
              "numbers are that run's, not this report's. CPU seconds: the retrainings alone, and the whole replay "
              "process.</p>"),
             _table(rows, ["policy", "log_loss", "vs_static", "auc", "ece", "retrainings", "promotions", "rejections",
                           "rejected_why", "retrain_cpu_s", "replay_cpu_s", "wall_s", "weeks_beating_static"])]
    if "static" in set(s["policy"]) and len(s) > 1:
        best = s.loc[s["log_loss"].idxmin()]
        base = float(s.loc[s["policy"] == "static", "log_loss"].iloc[0])
        verdict = ("no policy beat the static model" if best["policy"] == "static" else
                   f"<b>{html.escape(str(best['policy']))}</b> has the lowest log loss: {best['log_loss']:.4f} vs "
                   f"static {base:.4f} ({_percent(best['log_loss'] / base - 1, signed=True)})")
        parts.append(f"<p>Overall, {verdict}.</p>")
    if len(res.weekly):
        parts.append(_plot(res.weekly, current_weekly))
        overlap = {w.get("week") for w in current_weekly} & set(res.weekly["week"])
        if overlap:
            parts.append(f"<p class=muted>Dashed black: this run's own weekly log loss ({len(overlap)} of the "
                         "experiment's weeks).</p>")
    return "".join(parts)
