"""HTML reports for the loop and for a training run."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["loop_report", "training_report"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:70rem;color:#222}
h1{font-size:1.6rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9rem} td,th{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6} td.l,th.l{text-align:left} img{max-width:100%} .muted{color:#777;font-size:.85rem}
pre{background:#f6f6f6;padding:.5rem;overflow-x:auto;font-size:.8rem}
"""


def _figure(ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, ncols, figsize=(9, 3.6), dpi=100)
    return fig, ax


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4f}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return html.escape(str(v))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th{' class=l' if i == 0 else ''}>{html.escape(c)}</th>" for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(f"<td{' class=l' if i == 0 else ''}>{_fmt(r.get(c))}</td>"
                                    for i, c in enumerate(columns)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def loop_report(path: Path, *, project: str, months: Sequence[Mapping[str, Any]], weekly: Sequence[Mapping[str, Any]],
                decisions: Sequence[Mapping[str, Any]], calibration: Mapping[str, Sequence[float]],
                quality: Mapping[str, Any] | None = None, policy_results: Path | None = None) -> Path:
    """Write the continual-learning report (monthly table, weekly metrics, calibration, decision timeline,
    data quality, decisions).

    ``policy_results`` is the folder of a retraining-policy experiment's summary
    (:mod:`loopml.reports.policies`; the CLI passes the project folder's ``results/`` when it has
    one); without it the report has no such section, and with it a missing summary is said so.
    """
    from loopml.reports.policies import policies_section

    parts = [(f"<p class=muted>Project <b>{html.escape(project)}</b>. Every number below comes from the prediction "
              "log joined with labels as they landed (log and wait).</p>")]
    parts.append("<h2>Per month</h2>")
    parts.append(_table(months, ["month", "model_version", "predictions", "labelled", "log_loss", "baseline_log_loss",
                                 "auc", "brier"]))
    if months:
        fig, ax = _figure()
        x = [m["month"] for m in months]
        ax.plot(x, [m["log_loss"] for m in months], marker="o", label="served model")
        ax.plot(x, [m["baseline_log_loss"] for m in months], marker="s", linestyle="--", label="prior-rate baseline")
        ax.set_ylabel("log loss (lower is better)")
        ax.legend()
        ax.set_title("Log loss of served predictions per month")
        parts.append(_png(fig))
    if weekly:
        x = [w["week"] for w in weekly]
        promoted = [_week_index(x, d["details"]["evidence"]["holdout"][1]) for d in decisions
                    if d["kind"] == "promoted" and (d["details"].get("evidence") or {}).get("holdout")]
        for key, label, color in (("log_loss", "log loss", "tab:blue"), ("auc", "ROC AUC", "tab:green"),
                                  ("ece", "ECE (10 bins)", "tab:purple")):
            if not any(key in w for w in weekly):
                continue
            fig, ax = _figure()
            ax.plot(x, [w.get(key) for w in weekly], marker=".", color=color)
            ax.set_ylabel(label)
            ax.set_title(f"Weekly {label} of served predictions")
            ax.set_xticks(x[:: max(1, len(x) // 12)])
            ax.tick_params(axis="x", rotation=45)
            for i in promoted:
                ax.axvline(i, color="tab:orange", alpha=0.5)
            parts.append(_png(fig))
        parts.append("<p class=muted>Orange lines: a challenger was promoted.</p>")
        parts.append(_table(weekly, ["week", "labelled", "log_loss", "auc", "ece"]))
    parts.append(policies_section(policy_results, current_weekly=weekly))
    if calibration.get("mean_score"):
        fig, ax = _figure()
        ax.plot([0, 1], [0, 1], linestyle=":", color="gray")
        ax.plot(calibration["mean_score"], calibration["observed"], marker="o")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed delayed fraction")
        ax.set_title("Reliability diagram (all labelled served predictions)")
        parts.append(_png(fig))
    if decisions:
        parts.append("<h2>Decision timeline</h2>" + _timeline(decisions))
    if quality:
        parts.append("<h2>Data quality of served features</h2>")
        parts.append(f"<p class=muted>{quality.get('rows', 0):,} served rows vs the reference window "
                     f"{html.escape(' .. '.join(map(str, quality.get('reference_window') or [])))}; "
                     f"{'passed' if quality.get('passed') else '<b>problems found</b>'}.</p>")
        parts.append(_table(quality.get("columns", []), ["column", "kind", "missing_rate", "reference_missing_rate",
                                                          "out_of_range_rate", "unseen_category_rate"]))
        if quality.get("staleness"):
            parts.append("<p>Staleness: age of the newest event behind each feature at prediction time.</p>")
            parts.append(_table(quality["staleness"], ["feature", "source", "no_event_rate", "median_seconds",
                                                       "p95_seconds", "max_seconds"]))
    parts.append("<h2>Decisions</h2>")
    rows = [{"at": d["at"], "kind": d["kind"], "version": d["version"],
             "details": json.dumps(d["details"], default=str)[:400]} for d in decisions]
    parts.append(_table(rows, ["at", "kind", "version", "details"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(f"loopml — {project}: the loop", "".join(parts)), encoding="utf-8")
    return path


def _timeline(decisions: Sequence[Mapping[str, Any]]) -> str:
    """Every recorded decision on one time axis, one row per kind; failed gates are named beside rejections."""
    import matplotlib.dates as mdates
    import pandas as pd

    kinds = ["trigger", "registered", "rejected", "promoted", "rolled_back", "promotion_refused"]
    colors = {"promoted": "tab:green", "rejected": "tab:red", "promotion_refused": "tab:red"}
    fig, ax = _figure()
    seen = [k for k in kinds if any(d["kind"] == k for d in decisions)] or kinds[:1]
    for d in decisions:
        if d["kind"] not in seen or not d.get("at"):
            continue
        t = pd.Timestamp(d["at"]).tz_convert("UTC").tz_localize(None).to_pydatetime()
        ax.scatter([t], [seen.index(d["kind"])], color=colors.get(d["kind"], "tab:blue"), s=30)
        failed = (d.get("details") or {}).get("failed_gates")
        if failed:
            ax.annotate(", ".join(failed), (t, seen.index(d["kind"])), textcoords="offset points", xytext=(0, 6),
                        fontsize=6, rotation=30, color="tab:red")
    ax.set_yticks(range(len(seen)), seen)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_title("Decisions over time (registry)")
    ax.set_ylim(-0.5, len(seen) - 0.2)
    return _png(fig)


def _week_index(weeks: Sequence[str], iso: str) -> float:
    day = iso[:10]
    for i, w in enumerate(weeks):
        if w >= day:
            return i
    return len(weeks) - 1


def training_report(path: Path, *, project: str, version: int, evaluation: Mapping[str, Any],
                    importance: Mapping[str, float]) -> Path:
    """Write a report of one trained version: metrics beside baselines, feature importance."""
    model = evaluation["model"]
    rows = [{"": "model", **model}] + [{"": name, **m} for name, m in evaluation["baselines"].items()]
    parts = [f"<p>Version <b>{version}</b>, evaluated on {html.escape(' to '.join(evaluation['window']))}.</p>",
             _table(rows, ["", "n", "log_loss", "auc", "brier", "positive_rate"])]
    if importance:
        fig, ax = _figure()
        items = sorted(importance.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items])
        ax.set_title("Feature importance (total gain)")
        fig.set_size_inches(9, 0.3 * len(items) + 1)
        parts.append(_png(fig))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(f"loopml — {project} v{version}", "".join(parts)), encoding="utf-8")
    return path
