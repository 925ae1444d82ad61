"""`loopml run`: the loop on a (sped-up) wall clock with live ingestion, stopped by Ctrl-C and resumed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from loopml.loop import LoopController, RetrainPolicy
from loopml.serving.predictionlog import PredictionLog
from loopml.workspace import Workspace
from tests.conftest import FLIGHTS


@pytest.fixture(scope="module")
def state(flights_project, flights_ws, tmp_path_factory):
    """A state folder with a first champion (a small model, to keep the test short) and an empty event log."""
    boot = tmp_path_factory.mktemp("boot-cli")
    (boot / "events").symlink_to(flights_ws.root / "events", target_is_directory=True)
    small = replace(flights_project, model_params={**flights_project.model_params, "n_estimators": 30})
    LoopController(small, Workspace(boot), policy=RetrainPolicy.named("static")).bootstrap()
    root = tmp_path_factory.mktemp("run-cli")
    shutil.copy(boot / "registry.sqlite", root / "registry.sqlite")
    shutil.copytree(boot / "artifacts", root / "artifacts")
    return root


def _run(state, *extra):
    return subprocess.Popen([sys.executable, "-m", "loopml.cli", "run", "--project", str(FLIGHTS), "--state",
                             str(state), "--from", "2013-03-01", "--until", "2013-03-02", "--speed", "5000",
                             "--policy", "static", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(state):
    proc = _run(state)
    predictions = state / "predictions" / "predictions"
    deadline = time.monotonic() + 600
    while not any(predictions.glob("seg-*.jsonl")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # wait until it serves (the Ctrl-C handler is installed by then)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    first = json.loads(stdout)
    assert first["finished"] is False and "stopping" in stderr
    saved = json.loads((state / "loop.json").read_text())
    assert saved["finished"] is False and saved["done_until"] == first["done_until"]

    proc = _run(state)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    second = json.loads(stdout)
    assert second["finished"] is True and "resuming" in stderr
    served = PredictionLog(state / "predictions").joined()
    assert served["entity_id"].is_unique  # nothing served twice across the restart
    assert len(served) > 700 and served["label"].notna().mean() > 0.95  # all of 1 March, labels joined
    assert served["at"].max().isoformat() < "2013-03-02"
    assert second["data_quality"]["rows"] == len(served)
    assert {"schedule", "weather"} <= set(second["ingest_quality"]["latest"])  # every appended batch was checked
    # live ingestion only appended what had become available by the end of the run (+ label wait)
    log = Workspace(state).log
    assert max(log.read(s, columns=[]).column("available_time").to_pylist()[-1].isoformat()
               for s in log.sources()) <= "2013-03-04T00:00:00+00:00"
