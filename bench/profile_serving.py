"""Where ``loopml serve`` spends its time under load: py-spy samples of the event-loop thread.

Starts ``loopml serve`` on the state and request that ``bench_serving.py`` prepared (run it once
first), drives it with wrk at ``--concurrency`` (default 16), records the server with py-spy
(``--rate`` Hz, wall clock, in its own virtual environment under bench/.out/serving/) and prints
the share of the event-loop thread's busy samples per part of a request: framework layers, body
parsing, request validation, online feature lookup, scoring, prediction log (write, fsync),
metrics. Samples where the loop waits in ``select`` (idle) are counted apart.

Run:  .venv/bin/python bench/profile_serving.py [--seconds 25] [--batch-window-ms 0]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving as bs  # noqa: E402

PORT = 18721
SRC = bs.ROOT / "src" / "loopml"

# (label, predicate on the stack's frames), first match wins; unmatched stacks go to their leaf's package.
PARTS = [
    ("prediction log: os.fsync", lambda fs: "PredictionLog._append" in "".join(fs) and _line_has(fs[-1], "fsync")),
    ("prediction log: json.dumps + write + flush", lambda fs: any("PredictionLog.log_predictions" in f for f in fs)),
    ("online feature lookup (OnlineExecutor.get)", lambda fs: any("OnlineExecutor.get" in f for f in fs)),
    ("scoring (GBMModel.predict_rows)", lambda fs: any("GBMModel.predict_rows" in f for f in fs)),
    ("request validation (serving/schema.py)", lambda fs: any("loopml/serving/schema.py" in f for f in fs)),
    ("rest of Predictor.predict_many (metrics, records, ids)",
     lambda fs: any("Predictor.predict_many" in f for f in fs)),
    ("micro-batcher (serving/batching.py)", lambda fs: any("loopml/serving/batch" in f for f in fs)),
    ("body read + json.loads (http._json)", lambda fs: any("_json (loopml/serving/http.py" in f for f in fs)),
    ("rest of the /predict route (response)", lambda fs: any("create_app.<locals>.predict" in f for f in fs)),
    ("prometheus_client", lambda fs: any("prometheus_client" in f for f in fs)),
]


def _line_has(frame: str, word: str) -> bool:
    m = re.search(r"\((loopml/[^:]+):(\d+)\)$", frame)
    if not m:
        return False
    lines = (SRC.parent / m.group(1)).read_text().splitlines()
    return word in lines[int(m.group(2)) - 1]


def breakdown(raw: Path) -> tuple[collections.Counter, int, int]:
    parts: collections.Counter = collections.Counter()
    busy = idle = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, n_ = line.rsplit(" ", 1)
        n, fs = int(n_), stack.split(";")
        if not any("serve (loopml/cli.py" in f for f in fs):
            continue  # other threads (thread pool, champion watcher) mostly wait
        if "select (selectors.py" in fs[-1]:
            idle += n
            continue
        busy += n
        for label, hit in PARTS:
            if hit(fs):
                parts[label] += n
                break
        else:
            m = re.search(r"\(([^/()]+)/", fs[-1])
            pkg = m.group(1) if m else "stdlib"
            if "starlette/middleware/base.py" in stack and pkg in ("anyio", "starlette", "asyncio", "stdlib"):
                pkg = "starlette BaseHTTPMiddleware (@app.middleware) + anyio streams"
            parts[f"framework: {pkg}"] += n
    return parts, busy, idle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=25)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-window-ms", type=float, default=0.0)
    a = ap.parse_args()
    info = json.loads((bs.OUT / "row.json").read_text())
    pyspy = bs.ensure_venv("pyspy", ["py-spy"]) / "py-spy"
    lua = bs.lua_for("profile", info["request"])
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
    parts, busy, idle = breakdown(raw)
    print(f"loopml serve under wrk -c{a.concurrency} (while sampled at {a.rate} Hz): "
          f"{result['requests'] / (result['duration_us'] / 1e6):.0f} req/s, p50 {result['p50_us'] / 1000:.1f} ms")
    print(f"event-loop thread: {busy} busy samples, {idle} idle in select ({100 * idle / max(busy + idle, 1):.0f}%)")
    for label, n in parts.most_common():
        if n / busy >= 0.005:
            print(f"{100 * n / busy:5.1f}%  {label}")
    print(f"raw samples: {raw}")


if __name__ == "__main__":
    main()
