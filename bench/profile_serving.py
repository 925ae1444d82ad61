"""Where ``loopml serve`` spends its time under load: py-spy samples of the event-loop thread.

Starts ``loopml serve`` on the state and request that ``bench_serving.py`` prepared (run it once
first), drives it with wrk at ``--concurrency`` (default 16), records the server with py-spy
(``--rate`` Hz, wall clock, in its own virtual environment under bench/.out/serving/) and prints
the share of the event-loop thread's samples per part of a request: uvicorn, the event loop,
middleware, body parsing, request validation, online feature lookup, scoring, prediction log (write,
fsync wait), metrics, response. py-spy skips a thread that sleeps (uvloop waits in epoll, in C), so
the event-loop thread's samples over the wall time give how busy it was; the prediction log's fsync
thread is counted apart. A part of the table that gets no samples is named in the output (the code it
names was probably renamed).

Run:  .venv/bin/python bench/profile_serving.py [--seconds 25] [--batch-window-ms 1]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving as bs

PORT = 18721

# (label, predicate on the stack's frames), first match wins; unmatched stacks go to their leaf's package.
# Names are the code's qualified names (py-spy prints Class.method): a part that gets no samples is flagged
# in the output, since it usually means the code was renamed and this table went stale.
PARTS: list[tuple[str, Callable[[list[str]], bool]]] = [
    ("prediction log: orjson + write + flush (PredictionLog._append)", lambda fs: _in(fs, "PredictionLog._append")),
    ("prediction log: fsync wait future (PredictionLog.durable)", lambda fs: _in(fs, "PredictionLog.durable")),
    ("online feature lookup (OnlineExecutor.get)", lambda fs: _in(fs, "OnlineExecutor.get")),
    ("scoring (GBMModel.predict_rows)", lambda fs: _in(fs, "GBMModel.predict_rows")),
    ("request validation (serving/schema.py)", lambda fs: _in(fs, "loopml/serving/schema.py")),
    ("rest of the Predictor (metrics, records, ids)", lambda fs: _in(fs, "(loopml/serving/predictor.py")),
    ("micro-batcher (serving/batching.py)", lambda fs: _in(fs, "(loopml/serving/batching.py")),
    ("body read + JSON parse (http _body, _json)", lambda fs: _in(fs, "create_app.<locals>._body", "create_app.<locals>._json")),
    ("v2 tensors (serving/oip.py)", lambda fs: _in(fs, "(loopml/serving/oip.py")),
    ("response sent (uvicorn's send: headers, two socket writes)",
     lambda fs: _in(fs, "RequestResponseCycle.send (uvicorn/")),
    ("rest of the endpoints (predict / _infer: parsing, response bytes)",
     lambda fs: _in(fs, "create_app.<locals>.predict_direct", "create_app.<locals>._infer")),
    ("prometheus_client", lambda fs: _in(fs, "prometheus_client/")),
    ("middleware: request id, metrics, access line (http._Observe)", lambda fs: _in(fs, "_Observe.")),
    ("FastAPI/Starlette stack (paths other than the scoring ones)", lambda fs: _in(fs, "Starlette.__call__")),
    ("uvicorn: HTTP parsing, task per request, writes", lambda fs: _in(fs, "(uvicorn/protocols/")),
    ("event loop itself (uvloop in C: epoll, socket reads, callbacks)", lambda fs: fs[-1].startswith("Runner.run (")),
]


NOT_ON_PREDICT = {"v2 tensors (serving/oip.py)", "FastAPI/Starlette stack (paths other than the scoring ones)"}


def _in(frames: list[str], *names: str) -> bool:
    return any(n in f for f in frames for n in names)


def breakdown(raw: Path) -> tuple[collections.Counter, int, int]:
    """Samples per part of the event-loop thread, its busy samples, and the flusher thread's samples."""
    parts: collections.Counter = collections.Counter()
    busy = flusher = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, n_ = line.rsplit(" ", 1)
        n, fs = int(n_), stack.split(";")
        if _in(fs, "PredictionLog._run"):
            flusher += n
            continue
        if not _in(fs, "serve (loopml/cli.py"):
            continue  # other threads (thread pool, champion watcher) mostly wait
        busy += n
        for label, hit in PARTS:
            if hit(fs):
                parts[label] += n
                break
        else:
            m = re.search(r"\(([^/()]+)/", fs[-1])
            parts[f"other: {m.group(1) if m else 'stdlib'}"] += n
    return parts, busy, flusher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=25)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-window-ms", type=float, default=1.0, help="loopml serve's (adaptive) window; its default")
    ap.add_argument("--varied", action="store_true", help="ask for bench_serving's 256 flights in turn, not one")
    a = ap.parse_args()
    info = json.loads((bs.OUT / "row.json").read_text())
    pyspy = bs.ensure_venv("pyspy", ["py-spy"]) / "py-spy"
    lua = bs.lua_for("profile", info["request"], info["varied"] if a.varied else None)
    cmd = [str(bs.LOOPML_PY.parent / "loopml"), "serve", "--project", str(bs.PROJECT), "--state", str(bs.STATE),
           "--port", str(PORT), "--batch-window-ms", str(a.batch_window_ms)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("LOOPML_ADMIN_TOKEN", None)
    log = open(bs.OUT / "profile_serve.log", "w")  # noqa: SIM115
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    raw = bs.OUT / "profile_loopml.txt"
    try:
        for _ in range(240):
            try:
                if bs.http(f"http://127.0.0.1:{PORT}/health", timeout=1)[0] == 200:
                    break
            except Exception:  # not up yet
                time.sleep(0.5)
        url = f"http://127.0.0.1:{PORT}/predict"
        bs.wrk(url, lua, 4, 2)  # warm-up
        load = subprocess.Popen(["wrk", "-t1", f"-c{a.concurrency}", f"-d{a.seconds + 8}s", "--timeout", "5s",
                                 "-s", str(lua), url], stdout=subprocess.PIPE, text=True)
        time.sleep(3)
        subprocess.run([str(pyspy), "record", "--pid", str(server.pid), "-d", str(a.seconds), "-r", str(a.rate),
                        "--format", "raw", "-o", str(raw)], check=True, capture_output=True)
        out = load.communicate()[0]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    result = json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][7:])
    parts, busy, flusher = breakdown(raw)
    wall = a.seconds * a.rate
    print(f"loopml serve under wrk -c{a.concurrency} (while sampled at {a.rate} Hz): "
          f"{result['requests'] / (result['duration_us'] / 1e6):.0f} req/s, p50 {result['p50_us'] / 1000:.1f} ms; "
          f"load average {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"event-loop thread: {busy} samples, not sleeping {100 * busy / wall:.0f}% of the time (py-spy counts a "
          f"thread that waits for a CPU as busy); prediction-log flusher thread: {100 * flusher / wall:.0f}%")
    print("share of the event-loop thread's samples:")
    for label, n in parts.most_common():
        if n / max(busy, 1) >= 0.005:
            print(f"{100 * n / busy:5.1f}%  {label}")
    stale = [label for label, _ in PARTS if not parts[label] and label not in NOT_ON_PREDICT]
    if stale:
        print(f"no samples for {stale}: renamed code? (see PARTS)")
    print(f"raw samples: {raw}")


if __name__ == "__main__":
    main()
