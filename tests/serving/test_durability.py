"""Nothing acknowledged is lost: SIGKILL the server under load, every acknowledged prediction is in the log."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from loopml.serving.predictionlog import PredictionLog

ROOT = Path(__file__).resolve().parents[2]
BODY = {"carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH", "tailnum": "N14228",
        "sched_dep": "2013-03-01T14:15:00Z"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_prediction(served_ws):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "loopml.cli", "serve", "--project", str(ROOT / "examples" / "flights"),
         "--state", str(served_ws.root), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise AssertionError(f"server did not start: {server.stderr.read().decode()[-2000:] if server.poll() is not None else ''}")
            time.sleep(0.2)
        acked: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=5) as c:
                while not stop.is_set():
                    try:
                        r = c.post(f"{url}/predict", json=BODY)
                    except httpx.HTTPError:
                        return  # the server died mid-request: not acknowledged
                    if r.status_code == 200:
                        with lock:
                            acked.append(r.json()["request_id"])

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        while len(acked) < 300 and time.time() < deadline:
            time.sleep(0.01)
        os.killpg(server.pid, signal.SIGKILL)  # no chance to flush or close anything
        server.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert len(acked) >= 300
    logged = set(PredictionLog(served_ws.predictions).read_predictions()["request_id"])
    missing = [rid for rid in acked if rid not in logged]
    assert missing == []
