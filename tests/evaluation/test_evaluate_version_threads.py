"""evaluate_version's threaded steps (SHAP beside the bootstrap, ONNX batches cut across threads, the prefetched
window, the behavioural tests beside the robustness probes, the report's plots drawn during the bootstrap) change nothing."""

from __future__ import annotations

import numpy as np
import pytest

from loopml.datasets.build import build_dataset
from loopml.evaluation.behaviour import run_behaviour_tests
from loopml.loop.assess import _explanations, evaluate_version, prefetch_window
from loopml.loop.jobs import train_and_register
from loopml.registry import ArtifactStore, Registry
from loopml.timeutil import parse_time

pytestmark = pytest.mark.slow


def test_evaluate_version_explanations_and_scores_equal_the_serial_single_threaded_ones(
        flights_project, flights_ws, tmp_path):
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}", ArtifactStore(tmp_path / "a"))
    mv, _, _ = train_and_register(flights_project, flights_ws.log, reg, parse_time("2013-02-01"),
                                  parse_time("2013-03-01"))
    _, model = reg.load(flights_project.name, mv.version)  # the engine evaluation uses: the one recorded
    _, onnx_model = reg.load(flights_project.name, mv.version, backend="onnx")
    assert onnx_model.backend == "onnx"
    start, end = parse_time("2013-03-01"), parse_time("2013-03-15")
    doc = evaluate_version(flights_project, flights_ws.log, reg, mv.version, start, end, n_boot=50)

    # the same rows, scored in one call from this thread, explained here without a second thread
    frame = build_dataset(flights_ws.log, flights_project, start, end)
    rows = frame[frame[flights_project.label.name].notna()].reset_index(drop=True)
    X = model.encode_frame(rows)
    assert len(X) >= 2 * onnx_model._onnx.parallel_rows  # large enough to be cut across threads
    one_call = onnx_model._onnx._run(np.ascontiguousarray(X, dtype=np.float32))
    assert np.array_equal(onnx_model._onnx.predict(X), one_call)
    serial = _explanations(model, rows.sample(200, random_state=0))
    assert doc["explanations"] == serial
    # the behavioural tests ran in a thread beside the robustness probes, with the window's scores
    assert doc["behaviour"] == run_behaviour_tests(model, rows, flights_project.behaviour)
    assert doc["n"] == len(rows)


def test_a_prefetched_window_and_the_plots_drawn_during_the_bootstrap_change_no_number(
        flights_project, flights_ws, tmp_path):
    from loopml.reports.card import FigureRenderer, evaluation_figures

    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}", ArtifactStore(tmp_path / "a"))
    mv, _, _ = train_and_register(flights_project, flights_ws.log, reg, parse_time("2013-02-01"),
                                  parse_time("2013-03-01"))
    start, end = parse_time("2013-03-01"), parse_time("2013-03-15")
    plain = evaluate_version(flights_project, flights_ws.log, reg, mv.version, start, end, n_boot=50)
    seen = []
    renderer = FigureRenderer()

    def before_intervals(partial):
        seen.append(partial)
        renderer.submit(partial)

    window = prefetch_window(flights_project, flights_ws.log, start, end)
    fast = evaluate_version(flights_project, flights_ws.log, reg, mv.version, start, end, n_boot=50,
                            prefetched=window, before_intervals=before_intervals)
    assert window.used  # another EventLog object of the same folder (a Workspace makes one per access)
    assert window.result(flights_project, flights_ws.log, start, end) is None  # single use: never a stale frame
    for doc in (plain, fast):
        doc.pop("timings"), doc.pop("cpu_timings")
    assert fast == plain and list(fast) == list(plain)
    (partial,) = seen
    assert {k: m["value"] for k, m in partial["metrics"].items()} == {k: m["value"] for k, m in fast["metrics"].items()}
    assert "gates" not in partial and partial["baselines"] is None
    assert renderer.result() == evaluation_figures(fast)
    # a prefetch for another window is not used
    other = prefetch_window(flights_project, flights_ws.log, start, parse_time("2013-03-08"))
    again = evaluate_version(flights_project, flights_ws.log, reg, mv.version, start, end, n_boot=50, prefetched=other)
    assert again["n"] == plain["n"] and not other.used


def test_the_prefetch_hands_its_errors_over(flights_project, flights_ws, monkeypatch):
    from loopml.loop import assess

    def fails(*args, **kwargs):
        raise RuntimeError("the build failed")

    monkeypatch.setattr(assess, "build_dataset", fails)
    start, end = parse_time("2013-03-01"), parse_time("2013-03-02")
    broken = prefetch_window(flights_project, flights_ws.log, start, end)
    with pytest.raises(RuntimeError, match="the build failed"):
        broken.result(flights_project, flights_ws.log, start, end)
