"""Model cards (Mitchell et al., 2019) from a registered version and its evaluation document."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loopml.reports.html import _figure, _page, _png

__all__ = ["evaluation_report", "model_card"]


def _ci(m: Mapping[str, Any]) -> str:
    lo, hi = m["ci"]
    return f"{m['value']:.4f} (95% CI {lo:.4f}–{hi:.4f})" if lo == lo else f"{m['value']:.4f}"


def model_card(project: str, version: Mapping[str, Any], doc: Mapping[str, Any], *, intended_use: str = "",
               sources: list[str] | None = None) -> str:
    """Markdown model card: use, data, metrics with intervals, slices, calibration, conformal, gates, limits."""
    lines = [f"# Model card: {project} v{version['version']}", ""]
    lines += ["## Intended use", intended_use or "(not declared in the project)", ""]
    lines += ["## Training data",
              f"- window: {version.get('train_from')} to {version.get('train_to')} "
              f"(labels available by {version.get('label_cutoff')})",
              f"- sources: {', '.join(sources or [])}",
              f"- feature definitions sha256: `{version.get('feature_hash')}`",
              f"- code version (git): `{version.get('git_commit')}`", ""]
    lines += [f"## Evaluation on {doc['window'][0][:10]} to {doc['window'][1][:10]} ({doc['n']:,} labelled rows)", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_ci(m)} |" for k, m in doc["metrics"].items()]
    lines += ["", "Baselines:", ""]
    for name, b in doc["baselines"].items():
        parts = [f"{k} {_ci(v)}" for k, v in b.items() if isinstance(v, Mapping) and "ci" in v]
        lines.append(f"- {name}: " + "; ".join(parts))
    c = doc["calibration"]
    lines += ["", "## Calibration", f"- ECE (10 equal-width bins): {c['ece_uniform']:.4f}; "
              f"equal-mass bins: {c['ece_quantile']:.4f}", ""]
    cf = doc["conformal"]
    lines += ["## Conformal prediction sets", f"- alpha {cf['alpha']} ({cf['score']} score), calibrated on "
              f"{cf['calibration_window'][0][:10]}..{cf['calibration_window'][1][:10]}",
              f"- empirical coverage {cf['coverage']:.3f} (nominal {1 - cf['alpha']:.2f}), mean set size "
              f"{cf['mean_set_size']:.2f}", f"- {cf['note']}", ""]
    worst = doc["slices"]["worst"]
    lines += ["## Slices", "Slices significantly worse than the rest (Welch test, Benjamini–Hochberg):" if worst
              else "No slice is significantly worse than the rest."]
    lines += [f"- {w['column']} = {w['value']}: n {w['n']:,}, log loss {w['log_loss']:.4f} vs rest "
              f"{w['rest_log_loss']:.4f}" for w in worst[:10]]
    lines += ["", "## Gates"]
    lines += [f"- {g['gate']}: {'pass' if g['passed'] else 'FAIL'} (value {float(g['value']):.4f}, threshold "
              f"{float(g['threshold']):.4f})" for g in doc["gates"]]
    lines += ["", "## Known limitations",
              "- Trained and evaluated on 2013 flights from New York's three airports only.",
              "- Performance drifts with season and weather; conformal coverage assumes exchangeability, which "
              "time order breaks.",
              "- Cancelled and diverted flights count as delayed; the model does not separate them.", ""]
    return "\n".join(lines)


def evaluation_report(path: Path, doc: Mapping[str, Any], card: str) -> Path:
    """Self-contained HTML: reliability diagram, slice chart, coverage per origin, and the model card."""
    parts = []
    rel = doc["calibration"]["reliability"]
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray")
    ax.plot(rel["mean_predicted"], rel["fraction_positive"], marker="o")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraction delayed")
    ax.set_title("Reliability diagram")
    parts.append(_png(fig))
    slices = [s for s in doc["slices"]["by_value"] if s["column"] in ("carrier", "origin")]
    if slices:
        fig, ax = _figure()
        labels = [f"{s['column']}={s['value']}" for s in slices]
        ax.bar(labels, [s["log_loss"] for s in slices])
        ax.axhline(doc["metrics"]["log_loss"]["value"], color="tab:red", linestyle="--", label="overall")
        ax.set_ylabel("log loss")
        ax.tick_params(axis="x", rotation=60)
        ax.legend()
        ax.set_title("Log loss per slice")
        parts.append(_png(fig))
    by = doc["conformal"]["marginal"].get("by_group", {})
    if by:
        fig, ax = _figure()
        ax.bar(list(by), [g["coverage"] for g in by.values()])
        ax.axhline(1 - doc["conformal"]["alpha"], color="tab:red", linestyle="--", label="nominal")
        ax.set_ylim(0.5, 1)
        ax.set_ylabel("coverage")
        ax.legend()
        ax.set_title("Conformal coverage per origin")
        parts.append(_png(fig))
    parts.append(f"<pre>{html.escape(card)}</pre>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(f"loopml — {doc['model']} v{doc['model_version']} evaluation", "".join(parts)),
                    encoding="utf-8")
    return path
