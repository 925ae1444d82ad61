"""Does adaptive micro-batching pay? ``loopml serve`` with ``--batch-window-ms 0`` (off) vs 1 and 2.

Same state, same request (one flight's six request fields, ``POST /predict``), same load generator:
wrk (one thread, keep-alive, closed loop) at concurrency 1 and 16, ``--duration`` seconds each, in
rounds whose order rotates; each server is a fresh process per round. Reported: median over rounds
of throughput, p50, p99 and of the per-round ratio batched / off. Needs a state with a champion:
``bench/bench_serving.py`` makes one in ``bench/.out/serve-state`` (copied here, so the two benches
never share a prediction log).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / ".out" / "batching"
SOURCE_STATE = ROOT / "bench" / ".out" / "serve-state"
BODY = {"carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH", "tailnum": "N14228",
        "sched_dep": "2013-03-02T14:15:00Z"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state() -> Path:
    dst = OUT / "state"
    if not dst.exists():
        if not (SOURCE_STATE / "registry.sqlite").exists():
            raise SystemExit(f"no state at {SOURCE_STATE}: run bench/bench_serving.py first (it creates one)")
        shutil.copytree(SOURCE_STATE, dst, ignore=shutil.ignore_patterns("predictions", "reports"), symlinks=True)
    return dst


def start(window: float) -> tuple[subprocess.Popen, str]:
    port = _port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([str(ROOT / ".venv" / "bin" / "loopml"), "serve", "--project", str(ROOT / "examples" / "flights"),
                          "--state", str(state()), "--port", str(port), "--batch-window-ms", str(window),
                          "--watch-champion", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return p, url
        except OSError:
            time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    raise SystemExit(f"loopml serve --batch-window-ms {window} did not start")


def wrk(url: str, conc: int, dur: int) -> dict:
    lua = OUT / "post.lua"
    lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f"wrk.body = '{json.dumps(BODY)}'\n")
    out = subprocess.run(["wrk", "-t1", f"-c{conc}", f"-d{dur}s", "--latency", "--timeout", "5s", "-s", str(lua),
                          f"{url}/predict"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def ms(label: str) -> float:
        v, unit = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)", out).groups()
        return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"rps": rps, "p50_ms": ms("50%"), "p99_ms": ms("99%"), "non2xx": int(errors.group(1)) if errors else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--windows", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[float, int], list[dict]] = {}
    for k in range(args.rounds):
        order = args.windows[k % len(args.windows):] + args.windows[:k % len(args.windows)]
        for w in order:
            p, url = start(w)
            try:
                wrk(url, 4, 2)  # warm-up
                for c in (1, 16):
                    r = wrk(url, c, args.duration)
                    results.setdefault((w, c), []).append(r)
                    print(f"round {k} window {w} ms c{c}: {r}", file=sys.stderr)
            finally:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
    print(f"{'window ms':>9} {'conc':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'x off (req/s)':>13} {'non-2xx':>7}")
    for c in (1, 16):
        for w in args.windows:
            rs = results[(w, c)]
            ratio = statistics.median(r["rps"] / o["rps"] for r, o in zip(rs, results[(args.windows[0], c)], strict=True))
            print(f"{w:>9} {c:>4} {statistics.median(r['rps'] for r in rs):>8.0f} "
                  f"{statistics.median(r['p50_ms'] for r in rs):>7.2f} {statistics.median(r['p99_ms'] for r in rs):>7.2f} "
                  f"{ratio:>13.2f} {sum(r['non2xx'] for r in rs):>7}")


if __name__ == "__main__":
    main()
