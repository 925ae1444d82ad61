"""Model cards (Mitchell et al., 2019) from a registered version and its evaluation document.

The evaluation report's plots need only the point values of an evaluation, not its bootstrap
intervals, so :class:`FigureRenderer` can draw them in another process (matplotlib holds the GIL)
while the evaluation computes its intervals. This module imports nothing outside the standard
library at the top, so that process loads it from its file without loading loopml (pandas, DuckDB):
only matplotlib.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["FigureRenderer", "evaluation_figures", "evaluation_report", "model_card"]

_log = logging.getLogger("loopml.reports.card")


def _ci(m: Mapping[str, Any]) -> str:
    lo, hi = m["ci"]
    return f"{m['value']:.4f} (95% CI {lo:.4f}–{hi:.4f})" if not math.isnan(lo) else f"{m['value']:.4f}"


def model_card(project: str, version: Mapping[str, Any], doc: Mapping[str, Any], *, intended_use: str = "",
               sources: list[str] | None = None) -> str:
    """Markdown model card: use, data, metrics with intervals, slices, calibration, conformal, gates, limits."""
    lines = [f"# Model card: {project} v{version['version']}", ""]
    lines += ["## Intended use", intended_use or "(not declared in the project)", ""]
    lines += ["## Training data",
              (f"- window: {version.get('train_from')} to {version.get('train_to')} "
              f"(labels available by {version.get('label_cutoff')})"),
              f"- sources: {', '.join(sources or [])}",
              f"- feature definitions sha256: `{version.get('feature_hash')}`",
              f"- code version (git): `{version.get('git_commit')}`", ""]
    lines += [f"## Evaluation on {doc['window'][0][:10]} to {doc['window'][1][:10]} ({doc['n']:,} labelled rows)", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_ci(m)} |" for k, m in doc["metrics"].items()]
    lines += ["", "Baselines (fitted on the training window's labels available at the label cutoff, as the model "
              "was; the champion as served):", ""]
    for name, b in doc["baselines"].items():
        parts = [f"{k} {_ci(v)}" for k, v in b.items() if isinstance(v, Mapping) and "ci" in v]
        lines.append(f"- {name}: " + "; ".join(parts))
    c = doc["calibration"]
    lines += ["", "## Calibration", (f"- ECE (10 equal-width bins): {c['ece_uniform']:.4f}; "
              f"equal-mass bins: {c['ece_quantile']:.4f}")]
    rec = c.get("recalibration")
    if rec:
        lines.append(f"- recalibrator stored with this version and applied at serving: **{rec['kind']}** "
                     f"(chosen by validation log loss among {', '.join(rec.get('chosen_from') or ['identity'])}, "
                     f"on {rec.get('held_out_rows', 0):,} held-out rows); ECE before recalibration "
                     f"{c.get('ece_uniform_before_recalibration', float('nan')):.4f}")
    else:
        lines.append("- no recalibrator: scores are LightGBM's own probabilities")
    lines.append("")
    cf = doc["conformal"]
    lines += ["## Conformal prediction sets", (f"- alpha {cf['alpha']} ({cf['score']} score), calibrated on "
              f"{cf['calibration_window'][0][:10]}..{cf['calibration_window'][1][:10]}"),
              (f"- empirical coverage {cf['coverage']:.3f} (nominal {1 - cf['alpha']:.2f}), mean set size "
              f"{cf['mean_set_size']:.2f}"), f"- {cf['note']}", ""]
    worst = doc["slices"]["worst"]
    lines += ["## Slices", "Slices significantly worse than the rest (Welch test, Benjamini–Hochberg):" if worst
              else "No slice is significantly worse than the rest."]
    lines += [f"- {w['column']} = {w['value']}: n {w['n']:,}, log loss {w['log_loss']:.4f} vs rest "
              f"{w['rest_log_loss']:.4f}" for w in worst[:10]]
    behaviour = doc.get("behaviour") or []
    if behaviour:
        lines += ["", "## Behavioural tests", "", "| test | kind | passed | failure rate | rows |", "|---|---|---|---|---|"]
        lines += [f"| {b['name']} | {b['kind']} | {'yes' if b['passed'] else '**no**'} | {b['failure_rate']:.3f} | "
                  f"{b['n']:,} |" for b in behaviour]
    rob = doc.get("robustness")
    if rob:
        lines += ["", "## Robustness"]
        if rob.get("noise"):
            lines.append(f"- 1% Gaussian noise on every numeric feature moves the score by {rob['noise']['mean_abs_change']:.4f} "
                         f"on average (max {rob['noise']['max_abs_change']:.4f}) on {rob['noise']['n']:,} rows")
        for m in rob.get("missing_source") or []:
            change = m.get("log_loss_change")
            lines.append(f"- {m['group']} ({len(m['features'])} features missing): mean |score change| "
                         f"{m['mean_abs_change']:.4f}" + (f", log loss {change:+.4f}" if change is not None else ""))
    ex = doc.get("explanations")
    if ex:
        top = list(ex["mean_abs_shap"].items())[:8]
        lines += ["", "## What drives the score", "Mean |SHAP| (raw log-odds) on "
                  f"{ex['shap_rows']:,} rows: " + ", ".join(f"{k} {v:.3f}" for k, v in top)]
    lines += ["", "## Gates"]
    lines += [f"- {g['gate']}: {'pass' if g['passed'] else 'FAIL'} (value {float(g['value']):.4f}, threshold "
              f"{float(g['threshold']):.4f})" for g in doc["gates"]]
    lines += ["", "## Known limitations",
              "- Trained and evaluated on 2013 flights from New York's three airports only.",
              ("- Performance drifts with season and weather; conformal coverage assumes exchangeability, which "
              "time order breaks."),
              "- Cancelled and diverted flights count as delayed; the model does not separate them.", ""]
    return "\n".join(lines)


def _figure(ncols: int = 1, **margins: float) -> tuple[Any, Any]:
    """A figure for one row of plots, drawn by Agg without pyplot (no global figure registry).

    ``margins`` go to ``subplots_adjust``: fixed margins chosen per plot for its labels, since an
    automatic layout (tight or constrained) draws every text once more to measure it.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)
    fig.subplots_adjust(**{"left": 0.08, "right": 0.98, "bottom": 0.14, "top": 0.9, **margins})
    return fig, fig.subplots(1, ncols)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _gate_table(gates: list[Mapping[str, Any]]) -> str:
    rows = "".join(f"<tr><td class=l>{html.escape(str(g['gate']))}</td><td>{'pass' if g['passed'] else '<b>FAIL</b>'}</td>"
                   f"<td>{float(g['value']):.4f}</td><td>{float(g['threshold']):.4f}</td></tr>" for g in gates)
    return f"<table><tr><th class=l>gate</th><th>result</th><th>value</th><th>threshold</th></tr>{rows}</table>"


FIGURE_KEYS = ("calibration", "curves", "metrics", "slices", "explanations", "robustness", "conformal")
"""The parts of an evaluation document :func:`evaluation_figures` reads (of ``metrics`` only the values)."""


def evaluation_figures(doc: Mapping[str, Any]) -> list[str]:
    """The report's plots as ``<img>`` tags (base64 PNG): reliability, ROC and PR curves, slices,
    importance, robustness, coverage. Reads only :data:`FIGURE_KEYS` of ``doc``."""
    parts: list[str] = []
    rel = doc["calibration"]["reliability"]
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray")
    ax.plot(rel["mean_predicted"], rel["fraction_positive"], marker="o")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraction delayed")
    ax.set_title("Reliability diagram")
    parts.append(_png(fig))
    curves = doc.get("curves")
    if curves:
        fig, (ax1, ax2) = _figure(ncols=2, wspace=0.25)
        ax1.plot([0, 1], [0, 1], linestyle=":", color="gray")
        ax1.plot(curves["roc"]["fpr"], curves["roc"]["tpr"])
        ax1.set_xlabel("false positive rate")
        ax1.set_ylabel("true positive rate")
        ax1.set_title(f"ROC (AUC {doc['metrics']['roc_auc']['value']:.3f})")
        ax2.plot(curves["pr"]["recall"], curves["pr"]["precision"])
        ax2.axhline(curves["positive_rate"], linestyle=":", color="gray", label="no skill")
        ax2.set_xlabel("recall")
        ax2.set_ylabel("precision")
        pr_auc = doc["metrics"].get("pr_auc")
        ax2.set_title("Precision-recall" + (f" (AP {pr_auc['value']:.3f})" if pr_auc else ""))
        ax2.legend()
        parts.append(_png(fig))
    slices = [s for s in doc["slices"]["by_value"] if s["column"] in ("carrier", "origin")]
    if slices:
        fig, ax = _figure(bottom=0.3)
        labels = [f"{s['column']}={s['value']}" for s in slices]
        ax.bar(labels, [s["log_loss"] for s in slices])
        ax.axhline(doc["metrics"]["log_loss"]["value"], color="tab:red", linestyle="--", label="overall")
        ax.set_ylabel("log loss")
        ax.tick_params(axis="x", rotation=60)
        ax.legend()
        ax.set_title("Log loss per slice")
        parts.append(_png(fig))
    ex = doc.get("explanations")
    if ex:
        fig, (ax1, ax2) = _figure(ncols=2, left=0.25, wspace=1.0)
        top = list(ex["mean_abs_shap"].items())[:12][::-1]
        ax1.barh([k for k, _ in top], [v for _, v in top])
        ax1.set_xlabel("mean |SHAP| (log-odds)")
        ax1.set_title("Per-prediction contributions")
        gain = list(ex["gain"].items())[:12][::-1]
        ax2.barh([k for k, _ in gain], [v for _, v in gain], color="tab:orange")
        ax2.set_xlabel("total split gain")
        ax2.set_title("Global importance")
        parts.append(_png(fig))
    rob = (doc.get("robustness") or {}).get("missing_source")
    if rob:
        fig, ax = _figure()
        ax.bar([m["group"].removesuffix(" feed down") for m in rob], [m["log_loss_change"] or 0.0 for m in rob])
        ax.set_ylabel("log loss change")
        ax.set_xlabel("source whose feed is down")
        ax.set_title("When a feed is down: log loss with that source's features missing")
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
    return parts


def evaluation_report(path: Path, doc: Mapping[str, Any], card: str, *,
                      figures: list[str] | Callable[[], list[str]] | None = None) -> Path:
    """Self-contained HTML: gates, the plots of :func:`evaluation_figures`, and the card.

    ``figures``: the plots already drawn, or a function returning them (a :class:`FigureRenderer`'s
    ``result``); by default they are drawn here.
    """
    from loopml.reports.html import _page

    drawn = figures() if callable(figures) else figures
    parts = ["<h2>Gates</h2>", _gate_table(doc["gates"]),
             *(drawn if drawn is not None else evaluation_figures(doc))]
    parts.append(f"<pre>{html.escape(card)}</pre>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(f"loopml — {doc['model']} v{doc['model_version']} evaluation", "".join(parts)),
                    encoding="utf-8")
    return path


def _figure_inputs(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of ``doc`` the plots read, with the metrics' point values only."""
    out = {k: doc[k] for k in FIGURE_KEYS if k in doc and k != "metrics"}
    out["metrics"] = {k: {"value": m["value"]} for k, m in (doc.get("metrics") or {}).items()}
    return out


class FigureRenderer:
    """Draws :func:`evaluation_figures` in a child process, started before the document is ready.

    The child (the running interpreter, loading this file without loopml) imports matplotlib at once
    and then waits for the document on its stdin; :meth:`submit` sends it (only :data:`FIGURE_KEYS`,
    as JSON, with the metrics' point values) and :meth:`result` returns the ``<img>`` tags. Should the
    child be missing, fail or time out, :meth:`result` draws the plots in this process instead, so the
    report is the same either way.
    """

    def __init__(self, *, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self._doc: dict[str, Any] | None = None
        self._out: list[str] | None = None
        self._sent_here = False  # a document the child would get wrong: drawn here by design
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                # -P: the working directory is not on the child's path (a json.py there would break it)
                [sys.executable, "-P", "-c", _CHILD, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL)
        except OSError:
            self._proc = None

    def submit(self, doc: Mapping[str, Any]) -> None:
        """Send the document to the child, which starts drawing; returns at once.

        Only a document that JSON gives back exactly (string keys, plain scalars) is sent: the child
        would otherwise draw from other types (an integer group key read back as text, say). Anything
        else, like a child that cannot be written to, is drawn here by :meth:`result`.
        """
        self._doc = _figure_inputs(doc)
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        if not _json_exact(self._doc):
            self._kill()
            self._sent_here = True
            return
        payload = json.dumps(self._doc).encode() + b"\n"  # one line: JSON escapes newlines
        stdin, proc.stdin = proc.stdin, None  # written by the thread below; communicate() must not touch it

        def send() -> None:  # a thread: a payload beyond the pipe's buffer must not block the evaluation
            try:
                with stdin:
                    stdin.write(payload)
            except OSError:  # the child is gone: result() draws here
                pass

        threading.Thread(target=send, daemon=True, name="loopml-figures-send").start()

    def result(self) -> list[str]:
        """The plots of the submitted document (waits for the child)."""
        if self._out is not None:
            return self._out
        if self._doc is None:
            raise RuntimeError("FigureRenderer.result() before submit()")
        why = "the child process could not be started"
        if self._proc is not None:
            try:
                out, _ = self._proc.communicate(timeout=self.timeout)
                if self._proc.returncode == 0:
                    self._out = json.loads(out)
                else:
                    why = f"the child process exited with status {self._proc.returncode}"
            except (subprocess.TimeoutExpired, OSError, ValueError) as exc:
                why = f"the child process failed: {type(exc).__name__}: {exc}"[:300]
                self._kill()
        elif self._sent_here:
            why = "the document does not survive JSON unchanged"
        if self._out is None:
            # a failed child is worth a warning; a document it would misread is drawn here by design
            _log.log(logging.INFO if self._sent_here else logging.WARNING,
                     "report plots drawn in this process (slower, same plots): %s", why)
            self._out = evaluation_figures(self._doc)
        return self._out

    def close(self) -> None:
        """Stop the child if it is still waiting (nothing was submitted, or the result is not wanted)."""
        self._kill()

    def _kill(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for f in (self._proc.stdin, self._proc.stdout):
                if f is not None:
                    f.close()
        self._proc = None


def _json_exact(x: Any) -> bool:
    """Whether ``json.loads(json.dumps(x))`` gives ``x`` back, types included."""
    if type(x) is dict:
        return all(type(k) is str and _json_exact(v) for k, v in x.items())
    if type(x) is list:
        return all(_json_exact(v) for v in x)
    return x is None or type(x) in (str, bool, int) or isinstance(x, float)  # numpy.float64 is a float


_CHILD = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("_loopml_report_figures", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module._serve_figures()
sys.stdout.flush()
os._exit(0)  # the parent waits for this process to end: skip tearing matplotlib down (~0.06 s)
"""


def _serve_figures() -> None:
    """The child of :class:`FigureRenderer`: import matplotlib, read one document, write its plots."""
    from matplotlib.figure import Figure  # noqa: F401 - imported while the parent is still evaluating

    data = sys.stdin.buffer.readline()
    if not data.strip():
        return
    sys.stdout.write(json.dumps(evaluation_figures(json.loads(data))))
    sys.stdout.flush()
