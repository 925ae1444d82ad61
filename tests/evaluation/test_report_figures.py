"""The evaluation report's plots drawn in a child process while the intervals are computed: the same report."""

from __future__ import annotations

import json
import math
import sys

import pytest

from loopml.reports.card import FigureRenderer, evaluation_figures, evaluation_report


def _doc() -> dict:
    return {
        "model": "m", "model_version": 1,
        "metrics": {"log_loss": {"value": 0.5, "ci": [0.49, 0.51]}, "roc_auc": {"value": 0.7, "ci": [0.69, 0.71]},
                    "pr_auc": {"value": 0.4, "ci": [0.39, 0.41]}},
        "calibration": {"reliability": {"mean_predicted": [0.1, 0.5, 0.9], "fraction_positive": [0.12, 0.45, 0.8],
                                        "count": [10, 20, 5]}},
        "curves": {"roc": {"fpr": [0.0, 0.3, 1.0], "tpr": [0.0, 0.6, 1.0]},
                   "pr": {"recall": [0.0, 0.5, 1.0], "precision": [1.0, 0.6, 0.3]}, "positive_rate": 0.3},
        "slices": {"by_value": [{"column": "carrier", "value": "AA", "log_loss": 0.45},
                                {"column": "origin", "value": "JFK", "log_loss": math.nan},
                                {"column": "month", "value": 6, "log_loss": 0.6}], "worst": []},
        "explanations": {"mean_abs_shap": {"a": 0.3, "b": 0.1}, "gain": {"b": 10.0, "a": 5.0}},
        "robustness": {"missing_source": [{"group": "weather feed down", "log_loss_change": 0.02},
                                          {"group": "routes feed down", "log_loss_change": None}]},
        "conformal": {"alpha": 0.1, "marginal": {"by_group": {"EWR": {"coverage": 0.88}, "JFK": {"coverage": 0.91}}}},
        "gates": [{"gate": "ece", "passed": True, "value": 0.01, "threshold": 0.03}],
    }


def test_the_child_draws_the_plots_this_process_would(tmp_path):
    doc = _doc()
    renderer = FigureRenderer()
    renderer.submit({**doc, "metrics": {k: {"value": m["value"], "ci": None} for k, m in doc["metrics"].items()}})
    assert renderer._proc is not None
    drawn = renderer.result()
    assert renderer._proc.returncode == 0  # drawn by the child, not by the fallback
    here = evaluation_figures(doc)
    assert drawn == here and len(here) == 6
    a = evaluation_report(tmp_path / "a.html", doc, "card", figures=renderer.result)
    b = evaluation_report(tmp_path / "b.html", doc, "card")
    assert a.read_text() == b.read_text() and a.read_text().count("data:image/png;base64,") == 6
    renderer.close()


@pytest.mark.parametrize("broken", ["exits", "garbage", "missing"])
def test_a_failed_child_leaves_the_plots_to_this_process(monkeypatch, broken, caplog):
    doc = _doc()
    if broken == "missing":
        monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    else:
        code = "import sys; sys.exit(3)" if broken == "exits" else "import sys; sys.stdin.readline(); print('not json')"
        monkeypatch.setattr("loopml.reports.card._CHILD", code)
    renderer = FigureRenderer()
    renderer.submit(doc)
    with caplog.at_level("WARNING", logger="loopml.reports.card"):
        assert renderer.result() == evaluation_figures(doc)
    why = {"exits": "exited with status 3", "garbage": "JSONDecodeError", "missing": "could not be started"}[broken]
    assert any("drawn in this process" in r.message and why in r.message for r in caplog.records), caplog.text


def test_an_unused_renderer_is_stopped():
    renderer = FigureRenderer()
    proc = renderer._proc
    renderer.close()
    assert proc is not None and proc.poll() is not None
    assert renderer._proc is None
    json.dumps(_doc())  # the document the child reads is plain JSON


@pytest.mark.parametrize("keys", ["int", "numpy"])
def test_a_document_json_would_change_is_drawn_here(keys):
    """Integer group keys come back from JSON as text (another plot); numpy keys do not serialise at all."""
    import numpy as np

    doc = _doc()
    groups = doc["conformal"]["marginal"]["by_group"]
    make = int if keys == "int" else np.int64
    doc["conformal"]["marginal"]["by_group"] = {make(10 + i): v for i, v in enumerate(groups.values())}
    renderer = FigureRenderer()
    renderer.submit(doc)
    assert renderer._proc is None  # not sent to the child
    assert renderer.result() == evaluation_figures(doc)


def test_a_document_larger_than_the_pipe_does_not_block_submit(monkeypatch):
    import threading

    doc = _doc()
    doc["slices"]["by_value"] = [{"column": "origin", "value": f"A{i:05d}", "log_loss": 0.5 + i * 1e-6}
                                 for i in range(3000)]  # ~200 KB of JSON: more than a pipe holds
    monkeypatch.setattr("loopml.reports.card._CHILD", "import time; time.sleep(60)")  # a child that never reads
    renderer = FigureRenderer(timeout=2)
    submitting = threading.Thread(target=renderer.submit, args=(doc,), daemon=True)
    submitting.start()
    submitting.join(20)
    assert not submitting.is_alive()  # submit returned although nobody reads the pipe
    assert renderer.result() == evaluation_figures(doc)  # the child timed out: drawn here
    renderer.close()


def test_a_json_module_in_the_working_directory_does_not_break_the_child(tmp_path, monkeypatch):
    (tmp_path / "json.py").write_text("raise ImportError('shadowed')\n")
    monkeypatch.chdir(tmp_path)
    renderer = FigureRenderer()
    renderer.submit(_doc())
    renderer.result()
    assert renderer._proc is not None and renderer._proc.returncode == 0  # the child drew them
    renderer.close()
