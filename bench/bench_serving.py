"""HTTP serving: ``loopml serve`` vs ``mlflow models serve``, MLServer (adaptive batching) and FastAPI.

What is measured
----------------
The flights champion of a short demo state (``loopml demo --until 2013-03-03 --policy static``:
a LightGBM model trained on Jan-Feb 2013, registered with its verified ONNX export and the engine
measured faster for it, LightGBM's one-row C API) is served five ways, each in a fresh process per
round, all on 127.0.0.1 with ``OMP_NUM_THREADS=1``:

- ``loopml``: ``loopml serve --project examples/flights --state S --port N``; the request is the
  flight's six request fields (``POST /predict``); the server validates them, looks the 14 stored
  features up in the SQLite online store, scores with the version's recorded engine and appends the
  prediction (features included) to the durable prediction log before answering.
- ``loopml_onnx``: the same served with its verified ONNX export (``--backend onnx``).
- ``loopml_batch``: the same with ``--batch-window-ms 0``: batches of what arrives together, no added wait (the
  default before the adaptive 1 ms window; ``loopml`` itself batches with that default).
- ``loopml_varied``: ``loopml`` asked for the last 256 distinct flights the demo served, in turn (each at its
  own time, its own plane, route and airports), instead of one flight over and over: the lookup reads and
  computes more (the values a lookup keeps for one state and span of times are reused less), as a
  server sees many entities. Only its first flight's score is checked (the others' are not the peers').
- ``mlflow``: ``mlflow models serve -m DIR --env-manager local -w 1`` (MLflow 3.x) of the same
  booster saved with ``mlflow.lightgbm.save_model``; request: the encoded feature row as
  ``dataframe_split``.
- ``mlserver``: MLServer 1.7 + mlserver-lightgbm, the same booster file, adaptive batching on
  (``max_batch_size`` 16, ``max_batch_time`` 2 ms), default ``parallel_workers`` (1); request: the
  feature row as an Open Inference Protocol FP64 tensor of shape [1, F].
- ``fastapi``: the naive baseline of /work/shared/peers/serving/fastapi_app.py with the LightGBM
  booster instead of a pickle: one sync route, ``Booster.predict`` on the posted row.
- ``asgi_const``: the floor for an HTTP answer in Python: a bare ASGI callable that reads the body
  and returns a constant JSON score, run by the same uvicorn (same loop and HTTP parser) as
  ``loopml serve``; ``asgi_const_std`` is the same app under ``uvicorn[standard]`` (uvloop and
  httptools, as in the FastAPI baseline's environment).

Peers get the feature row that loopml's online executor computes for the same flight and time
(encoded exactly as loopml encodes it), so every server scores the same booster on the same row.
Before timing, each server's answer is checked against ``Booster.predict`` on that row (1e-5: the
ONNX export is verified to that tolerance at registration). Peers run in their own
virtual environments under bench/.out/serving/ (created here on first run), never in loopml's.

Load: wrk 4 (C, HTTP/1.1 keep-alive, closed loop), one thread, ``-c1`` and ``-c16``, a Lua POST
script per server (the peer harness's), single-row requests. Each round starts every server
fresh, warms each one up, then times them one at a time in an order rotated between rounds.
Reported: per server the median over rounds of throughput, p50 and p99 (wrk's), and server CPU per
request (utime+stime of the server's process group from /proc/<pid>/stat, before and after);
and the median over rounds of the per-round ratios loopml/peer. Also measured in the same run, in
fresh processes: the model's own one-row ``Booster.predict`` (native, one thread), loopml's ONNX
one-row ``GBMModel.predict_rows`` and the in-process ``Predictor.predict_many`` of one raw request
(validation, online feature lookup, ONNX scoring, durable prediction log in a scratch folder; without
the log also with the model scored natively, through LightGBM's one-row C API; with ``--before``, the
before code's Predictor too, as ``before_*``, each round alternating which goes first), pinned
to one CPU (``--pin``), each after a warm-up: wall p50/p99/p99.9, and the calling thread's CPU time per
call (p50/p99: without the time the scheduler gave to other processes, which on a shared machine is
most of a wall-clock p99).

``--before REV`` also serves loopml's ``src/`` at git revision REV (a worktree under OUT) as
``loopml_before`` (and ``loopml_varied_before`` beside ``loopml_varied``) in the same rounds, and prints
loopml / loopml_before; ``--after REV`` serves REV
instead of this checkout (uncommitted work under ``src/``, anyone's, is otherwise what runs).
``--only NAME ...`` runs a subset (loopml, asgi_const and loopml_before always run; peers' venvs are
installed only for the peers that run). ``--onnx`` only times ONNX Runtime call styles (see onnx_variants).

Run:  .venv/bin/python bench/bench_serving.py [--rounds 3] [--duration 10] [--before REV] [--after REV]
Exit status 1 if a server answers a different score, fails to start, or returns errors under load.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

from _revisions import worktree  # bench/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / ".out" / "serving"
STATE = ROOT / "bench" / ".out" / "serve-state"
PROJECT = ROOT / "examples" / "flights"
LOOPML_PY = Path(sys.executable)
CLK = os.sysconf("SC_CLK_TCK")
TOL = 1e-5
BATCH = {"max_batch_size": 16, "max_batch_time": 0.002}  # MLServer's adaptive batching
LOOPML_BATCH_MS = 0.0  # loopml_batch's --batch-window-ms (loopml serve's default: 1.0, adaptive)
PY_FOR_VENVS = os.environ.get("BENCH_PYTHON", sys.executable)

# Peer virtual environments: name -> pip requirements (tested ranges).
VENVS = {
    "mlflow": ["mlflow>=3,<4", "lightgbm==4.7.0"],
    "mlserver": ["mlserver>=1.7,<1.8", "mlserver-lightgbm>=1.7,<1.8", "uvloop<0.22", "lightgbm==4.7.0"],
    "fastapi": ["fastapi", "uvicorn[standard]", "lightgbm==4.7.0"],
}
PORTS = {"loopml": 18701, "mlflow": 18702, "mlserver": 18703, "fastapi": 18706, "asgi_const": 18707, "asgi_const_std": 18708,
         "loopml_batch": 18709, "loopml_before": 18710, "loopml_varied": 18711,
         "loopml_varied_before": 18712, "loopml_onnx": 18713}

FASTAPI_APP = '''"""Naive baseline (peers/serving/fastapi_app.py with LightGBM): one JSON row in, predict out."""
import os
import lightgbm as lgb
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

model = lgb.Booster(model_file=os.environ["MODEL_PATH"])
app = FastAPI()


class Req(BaseModel):
    inputs: list[list[float]]


@app.post("/predict")
def predict(req: Req):  # sync def -> FastAPI's threadpool (idiomatic for blocking work)
    return {"predictions": model.predict(np.asarray(req.inputs, dtype=np.float64)).tolist()}


@app.get("/health")
def health():
    return {"ok": True}
'''

ASGI_CONST = '''"""Floor: a bare ASGI app that drains the request body and returns a constant score."""
BODY = b'{"score":0.5}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
'''

MLFLOW_SAVE = '''import json, sys, shutil
import lightgbm as lgb, pandas as pd, mlflow, mlflow.lightgbm
info = json.load(open(sys.argv[1]))
booster = lgb.Booster(model_file=sys.argv[2])
shutil.rmtree(sys.argv[3], ignore_errors=True)
mlflow.lightgbm.save_model(booster, sys.argv[3],
                           input_example=pd.DataFrame([info["row"]], columns=info["features"]))
print(mlflow.__version__)
'''

LUA_DONE = r'''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"mean_us":%.1f,"max_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d}\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
'''


# -- setup ---------------------------------------------------------------------------------------

def ensure_venv(name: str, requirements: list[str] | None = None) -> Path:
    """OUT/venv-NAME with VENVS[name] installed (once; a marker records the requirements)."""
    reqs = requirements or VENVS[name]
    venv = OUT / f"venv-{name}"
    marker = venv / ".bench-requirements"
    spec = "\n".join(reqs)
    if marker.exists() and marker.read_text() == spec:
        return venv / "bin"
    print(f"installing {name} into {venv} ...", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([PY_FOR_VENVS, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *reqs], check=True)
    marker.write_text(spec)
    return venv / "bin"


def ensure_state() -> None:
    if (STATE / "registry.sqlite").exists() and (STATE / "online.sqlite").exists():
        return
    print(f"creating the demo state in {STATE} (loopml demo, ~1-2 min) ...", flush=True)
    subprocess.run([str(LOOPML_PY.parent / "loopml"), "demo", "--dir", str(STATE), "--until", "2013-03-03",
                    "--policy", "static"], check=True, stdout=subprocess.DEVNULL)


def prepare() -> dict:
    """Pick a served flight, compute its features as loopml does, and lay the booster out for peers."""
    from loopml import load_project
    from loopml.serving.factory import build_predictor
    from loopml.serving.predictionlog import PredictionLog
    from loopml.timeutil import parse_time
    from loopml.workspace import Workspace

    proj = load_project(PROJECT)
    ws = Workspace.for_project(proj, STATE)
    predictor = build_predictor(proj, ws)
    predictor.log = None
    logged = PredictionLog(ws.predictions).read_predictions().sort_values("at")
    fields = list(proj.spine.request_fields)
    chosen = None
    # One of the last flights served, scheduled up to 2 h later if need be, so that every feature has a
    # value now (weather is dropped after 3 h; the state ends at the demo's --until): missing values
    # would need NaN in JSON, which some peers reject.
    for logged_req in list(logged["request"])[::-1][:50]:
        for shift in range(0, 121, 30):
            req = {f: _plain(logged_req[f]) for f in fields}
            if req.get("tailnum") is None:
                break
            req["sched_dep"] = (parse_time(req["sched_dep"], field="sched_dep")
                                + timedelta(minutes=shift)).isoformat()
            pred = predictor.predict(req)
            if all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in pred.features.values()):
                chosen = (req, pred)
                break
        if chosen:
            break
    if chosen is None:
        raise SystemExit("no served flight with complete features in the demo state's prediction log")
    req, pred = chosen
    varied = [req]  # the chosen flight first (its score is checked), then the last distinct flights served
    same_flight = {f: v for f, v in req.items() if f != "sched_dep"}  # the chosen one may be served shifted
    for logged_req in list(logged["request"])[::-1]:
        other = {f: _plain(logged_req[f]) for f in fields}
        if (len(varied) < 256 and None not in other.values() and other not in varied
                and {f: v for f, v in other.items() if f != "sched_dep"} != same_flight):
            varied.append(other)
    model = predictor.model
    X = model.encode_rows([pred.features])
    native = float(model.booster.predict(X, num_threads=1)[0])
    if abs(native - pred.score) > TOL:
        raise SystemExit(f"loopml's score {pred.score} differs from the booster's {native} by more than {TOL}")
    OUT.mkdir(parents=True, exist_ok=True)
    model.booster.save_model(str(OUT / "model.txt"))
    info = {"request": req, "varied": varied, "features": model.features, "row": X[0].tolist(), "expected": native,
            "loopml_score": pred.score, "model_version": predictor.version, "backend": model.backend}
    (OUT / "row.json").write_text(json.dumps(info, indent=1))
    return info


def _plain(value):
    """A JSON-ready request value (DuckDB hands back numpy integers and timestamps)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def layout_peers(info: dict, names: set[str]) -> None:
    """Install and lay out the peers among ``names`` (venvs only for those that run)."""
    need = {"mlflow": "mlflow", "mlserver": "mlserver", "fastapi": "fastapi", "asgi_const_std": "fastapi"}
    bins = {v: ensure_venv(v) for n, v in need.items() if n in names}
    (OUT / "fastapi_app.py").write_text(FASTAPI_APP)
    (OUT / "asgi_const.py").write_text(ASGI_CONST)
    if "mlflow" in bins:
        out = subprocess.run([str(bins["mlflow"] / "python"), "-c", MLFLOW_SAVE, str(OUT / "row.json"),
                              str(OUT / "model.txt"), str(OUT / "mlflow_model")], capture_output=True, text=True,
                             env=dict(os.environ, MLFLOW_TRACKING_URI=f"file://{OUT}/mlruns"))
        if out.returncode:
            raise SystemExit(f"mlflow save_model failed:\n{out.stderr[-3000:]}")
    repo = OUT / "mlserver_repo"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "flights").mkdir(parents=True)
    shutil.copy(OUT / "model.txt", repo / "flights" / "model.txt")
    p = PORTS["mlserver"]
    (repo / "settings.json").write_text(json.dumps(
        {"host": "127.0.0.1", "http_port": p, "grpc_port": p + 1, "metrics_port": p + 2}, indent=1))
    (repo / "flights" / "model-settings.json").write_text(json.dumps(
        {"name": "flights", "implementation": "mlserver_lightgbm.LightGBMModel", **BATCH,
         "parameters": {"uri": "./model.txt", "version": "v1"}}, indent=1))


def servers(info: dict, *, after: Path | None = None, before: tuple[str, Path] | None = None) -> dict[str, dict]:
    """The servers to compare; ``after``/``before``: loopml's src/ from a worktree instead of this checkout."""
    out = _servers(info)
    if after is not None:
        for n in ("loopml", "loopml_onnx", "loopml_batch", "loopml_varied"):
            out[n]["env"] = {"PYTHONPATH": str(after)}
    if before is not None:
        rev, src = before
        port = PORTS["loopml_before"]
        out["loopml_before"] = {**out["loopml"], "env": {"PYTHONPATH": str(src)}, "rev": rev,
                                "cmd": [*out["loopml"]["cmd"][:-1], str(port)],
                                "health": f"http://127.0.0.1:{port}/health", "url": f"http://127.0.0.1:{port}/predict"}
        port = PORTS["loopml_varied_before"]
        out["loopml_varied_before"] = {**out["loopml_varied"], "env": {"PYTHONPATH": str(src)}, "rev": rev,
                                       "cmd": [*out["loopml_varied"]["cmd"][:-1], str(port)],
                                       "health": f"http://127.0.0.1:{port}/health",
                                       "url": f"http://127.0.0.1:{port}/predict"}
    return out


def _servers(info: dict) -> dict[str, dict]:
    venv = {n: OUT / f"venv-{n}" / "bin" for n in VENVS}
    row, feats = info["row"], info["features"]
    host = "http://127.0.0.1"
    return {
        "loopml": dict(
            cmd=[str(LOOPML_PY.parent / "loopml"), "serve", "--project", str(PROJECT), "--state", str(STATE),
                 "--port", str(PORTS["loopml"])],
            health=f"{host}:{PORTS['loopml']}/health", url=f"{host}:{PORTS['loopml']}/predict",
            body=info["request"], score=lambda d: d["score"]),
        "loopml_onnx": dict(
            cmd=[str(LOOPML_PY.parent / "loopml"), "serve", "--project", str(PROJECT), "--state", str(STATE),
                 "--backend", "onnx", "--port", str(PORTS["loopml_onnx"])],
            health=f"{host}:{PORTS['loopml_onnx']}/health", url=f"{host}:{PORTS['loopml_onnx']}/predict",
            body=info["request"], score=lambda d: d["score"]),
        "loopml_batch": dict(
            cmd=[str(LOOPML_PY.parent / "loopml"), "serve", "--project", str(PROJECT), "--state", str(STATE),
                 "--port", str(PORTS["loopml_batch"]), "--batch-window-ms", str(LOOPML_BATCH_MS)],
            health=f"{host}:{PORTS['loopml_batch']}/health", url=f"{host}:{PORTS['loopml_batch']}/predict",
            body=info["request"], score=lambda d: d["score"]),
        "loopml_varied": dict(
            cmd=[str(LOOPML_PY.parent / "loopml"), "serve", "--project", str(PROJECT), "--state", str(STATE),
                 "--port", str(PORTS["loopml_varied"])],
            health=f"{host}:{PORTS['loopml_varied']}/health", url=f"{host}:{PORTS['loopml_varied']}/predict",
            body=info["request"], bodies=info["varied"], score=lambda d: d["score"]),
        "mlflow": dict(
            cmd=[str(venv["mlflow"] / "mlflow"), "models", "serve", "-m", str(OUT / "mlflow_model"), "-h", "127.0.0.1",
                 "-p", str(PORTS["mlflow"]), "--env-manager", "local", "-w", "1"],
            health=f"{host}:{PORTS['mlflow']}/ping", url=f"{host}:{PORTS['mlflow']}/invocations",
            body={"dataframe_split": {"columns": feats, "data": [row]}}, score=lambda d: d["predictions"][0]),
        "mlserver": dict(
            cmd=[str(venv["mlserver"] / "mlserver"), "start", str(OUT / "mlserver_repo")],
            health=f"{host}:{PORTS['mlserver']}/v2/models/flights/ready",
            url=f"{host}:{PORTS['mlserver']}/v2/models/flights/infer",
            body={"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]},
            score=lambda d: d["outputs"][0]["data"][0]),
        "fastapi": dict(
            cmd=[str(venv["fastapi"] / "uvicorn"), "fastapi_app:app", "--app-dir", str(OUT), "--host", "127.0.0.1",
                 "--port", str(PORTS["fastapi"]), "--workers", "1", "--log-level", "warning"],
            health=f"{host}:{PORTS['fastapi']}/health", url=f"{host}:{PORTS['fastapi']}/predict",
            body={"inputs": [row]}, score=lambda d: d["predictions"][0]),
        "asgi_const": dict(
            cmd=[str(LOOPML_PY), "-m", "uvicorn", "asgi_const:app", "--app-dir", str(OUT), "--host", "127.0.0.1",
                 "--port", str(PORTS["asgi_const"]), "--log-level", "warning"],
            health=f"{host}:{PORTS['asgi_const']}/", url=f"{host}:{PORTS['asgi_const']}/predict",
            body=info["request"], score=None),
        "asgi_const_std": dict(
            cmd=[str(venv["fastapi"] / "uvicorn"), "asgi_const:app", "--app-dir", str(OUT), "--host", "127.0.0.1",
                 "--port", str(PORTS["asgi_const_std"]), "--log-level", "warning"],
            health=f"{host}:{PORTS['asgi_const_std']}/", url=f"{host}:{PORTS['asgi_const_std']}/predict",
            body=info["request"], score=None),
    }


# -- measurement (wrk, CPU of a process group, in-process floors) --------------------------------

def pg_cpu_s(pgid: int) -> float:
    """utime+stime (s) summed over the live processes of process group ``pgid`` (server + workers)."""
    tot = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        f = st[st.rfind(")") + 2:].split()  # after "(comm)": state ppid pgrp ... utime(11) stime(12)
        if int(f[2]) == pgid:
            tot += int(f[11]) + int(f[12])
    return tot / CLK


def lua_for(name: str, body: dict, bodies: list[dict] | None = None) -> Path:
    """wrk's script: POST ``body`` every time, or each of ``bodies`` in turn."""
    path = OUT / f"post_{name}.lua"

    def lua_string(b: dict) -> str:
        return "'" + json.dumps(b).replace("\\", "\\\\").replace("'", "\\'") + "'"

    head = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    if bodies:
        # the requests are formatted once per thread (init), not per request: wrk shares the 2 cores with the server
        turns = ("bodies = {" + ",\n".join(lua_string(b) for b in bodies) + "}\n"
                 "init = function(args)\n  reqs = {}\n"
                 "  for j = 1, #bodies do reqs[j] = wrk.format(nil, nil, nil, bodies[j]) end\nend\n"
                 "i = 0\nrequest = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n")
        path.write_text(head + turns + LUA_DONE)
    else:
        path.write_text(head + f"wrk.body = {lua_string(body)}\n" + LUA_DONE)
    return path


def http(url: str, body: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def wrk(url: str, lua: Path, conc: int, dur: int, pgid: int | None = None) -> dict:
    c0 = pg_cpu_s(pgid) if pgid else 0.0
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{conc}", f"-d{dur}s", "--timeout", "5s", "-s", str(lua), url],
                         capture_output=True, text=True, timeout=dur + 60).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"wrk printed no result for {url}:\n{out}")
    r = json.loads(lines[-1][7:])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r["client_cpu_s"] = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    r["errors"] = r["err_status"] + r["err_timeout"] + r["err_read"] + r["err_write"] + r["err_connect"]
    if pgid:
        r["server_cpu_s"] = pg_cpu_s(pgid) - c0
        r["server_cpu_us_per_req"] = r["server_cpu_s"] * 1e6 / max(r["requests"], 1)
    return r


def _timed(fn, n: int) -> dict:
    """Latency of ``fn`` after a warm-up: wall-clock percentiles, and this thread's CPU time per call (its p99
    leaves out the time the scheduler ran something else: on a shared machine that is most of a wall p99)."""
    for _ in range(max(n // 10, 50)):
        fn()
    ts, cs = [], []
    collections0 = sum(g["collections"] for g in gc.get_stats())
    c0 = time.process_time()
    for _ in range(n):
        c, t = time.thread_time(), time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.thread_time() - c)
    cpu = (time.process_time() - c0) / n
    ts.sort()
    cs.sort()
    return {"p50_us": ts[len(ts) // 2] * 1e6, "p99_us": ts[int(len(ts) * 0.99)] * 1e6,
            "p999_us": ts[int(len(ts) * 0.999)] * 1e6, "mean_us": statistics.fmean(ts) * 1e6,
            "cpu_us_per_call": cpu * 1e6, "thread_cpu_p50_us": cs[len(cs) // 2] * 1e6,
            "thread_cpu_p99_us": cs[int(len(cs) * 0.99)] * 1e6,
            "gc_collections": sum(g["collections"] for g in gc.get_stats()) - collections0}


def inprocess(n: int) -> dict:
    """Run in a fresh process (``--inprocess``): the one-row floors and loopml's in-process Predictor."""
    import lightgbm as lgb
    import numpy as np

    from loopml import load_project
    from loopml.serving.factory import build_predictor
    from loopml.serving.predictionlog import PredictionLog
    from loopml.workspace import Workspace

    info = json.loads((OUT / "row.json").read_text())
    x = np.asarray([info["row"]], dtype=np.float64)
    booster = lgb.Booster(model_file=str(OUT / "model.txt"))
    res = {"booster_predict": _timed(lambda: booster.predict(x, num_threads=1), n)}
    proj = load_project(PROJECT)
    predictor = build_predictor(proj, Workspace.for_project(proj, STATE))
    model = predictor.model
    res["loopml_model_predict_rows"] = _timed(lambda: model.predict_rows([{}]), n) | {"backend": model.backend}
    request = info["request"]
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        predictor.log = PredictionLog(tmp)  # same group-commit log as the server, in a scratch folder
        res["predictor_predict_many"] = _timed(lambda: predictor.predict_many([request]), n)
        predictor.log.close()
    predictor.log = None
    res["predictor_predict_many_nolog"] = _timed(lambda: predictor.predict_many([request]), n) | {
        "backend": model.backend}
    # the same with the other engine: natively (LightGBM's one-row C API) and with the verified ONNX export
    from loopml.registry import ArtifactStore, Registry

    ws = Workspace.for_project(proj, STATE)
    reg = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    for engine in ("native", "onnx"):
        try:
            model = reg.load(proj.name, predictor.version, backend=engine)[1]
        except TypeError:  # a loopml from before the engine could be chosen (--before REV): native as it measured
            if engine == "onnx":
                continue
            from loopml.training.model import GBMModel

            model = GBMModel.from_bytes(reg.artifacts.get(reg.get(proj.name, predictor.version).artifact_sha256))
        predictor.swap(model, predictor.version)
        res[f"predictor_predict_many_nolog_{engine}"] = _timed(lambda: predictor.predict_many([request]), n)
    return res


def onnx_variants(n: int) -> dict:
    """One-row ONNX Runtime calls of the served model under session options and call styles, warm (the same
    call in a loop) and cache-cold (a 32 MB array summed between calls, as a server's other work and other
    processes evict the trees), beside ``Booster.predict``; 16 rows too. Run with ``--onnx`` (pinned, see --pin)."""
    import lightgbm as lgb
    import numpy as np
    import onnxruntime as ort

    from loopml import load_project
    from loopml.registry import ArtifactStore, Registry
    from loopml.workspace import Workspace

    proj = load_project(PROJECT)
    ws = Workspace.for_project(proj, STATE)
    reg = Registry(ws.registry_url, ArtifactStore(ws.artifacts))
    mv = reg.get(proj.name, "champion")
    blob = reg.artifacts.get(mv.info["onnx"]["sha256"])
    info = json.loads((OUT / "row.json").read_text())
    x = np.asarray([info["row"]], dtype=np.float32)
    booster = lgb.Booster(model_file=str(OUT / "model.txt"))
    junk = np.ones(4_000_000)

    def session(**config: str) -> ort.InferenceSession:
        o = ort.SessionOptions()
        o.intra_op_num_threads = o.inter_op_num_threads = 1
        o.log_severity_level = 3
        if config.pop("sequential", None):
            o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if config.pop("opt", None) == "basic":
            o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        for k, v in config.items():
            o.add_session_config_entry(k, v)
        return ort.InferenceSession(blob, o, providers=["CPUExecutionProvider"])

    base = session()
    tuned = session(sequential="1", **{"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"})
    basic = session(opt="basic")
    binding = base.io_binding()
    binding.bind_cpu_input("input", x)
    binding.bind_output("probabilities")
    x16 = np.repeat(x, 16, axis=0)
    fast_row = _lightgbm_single_row_fast(booster, x.shape[1])
    row64 = x[0].astype(np.float64)
    calls = {
        "run(None), loopml's options before": lambda: base.run(None, {"input": x}),
        "run(['probabilities']), as loopml now": lambda: base.run(["probabilities"], {"input": x}),
        "+ sequential, no spinning": lambda: tuned.run(["probabilities"], {"input": x}),
        "graph optimisation basic (default all)": lambda: basic.run(["probabilities"], {"input": x}),
        "IOBinding, input bound once": lambda: base.run_with_iobinding(binding),
        "Booster.predict (native)": lambda: booster.predict(x.astype(np.float64), num_threads=1),
        "LightGBM C API single-row fast path": lambda: fast_row(row64),
        "16 rows: run(['probabilities'])": lambda: base.run(["probabilities"], {"input": x16}),
        "16 rows: Booster.predict": lambda: booster.predict(x16.astype(np.float64), num_threads=1),
    }
    out: dict = {}
    for name, fn in calls.items():
        for cold in (False, True):
            for _ in range(100):
                fn()
            ts = []
            for _ in range(n):
                if cold:
                    junk.sum()
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            ts.sort()
            out.setdefault(name, {})["cold_p50_us" if cold else "warm_p50_us"] = ts[len(ts) // 2] * 1e6
        print(f"{name:42s} warm p50 {out[name]['warm_p50_us']:7.1f} us   cache-cold p50 {out[name]['cold_p50_us']:7.1f} us",
              flush=True)
    return out


def _lightgbm_single_row_fast(booster, n_features: int):
    """LightGBM's own one-row scorer (``LGBM_BoosterPredictForMatSingleRowFast``, set up once), which the Python
    package does not wrap: the same trees and arithmetic as ``Booster.predict``, without its per-call checks."""
    import ctypes

    import numpy as np
    from lightgbm.basic import _LIB, _c_str, _safe_call

    handle = ctypes.c_void_p()
    # predict type 0 (normal), start iteration 0, all iterations, float64 rows
    _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
        booster._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(-1), ctypes.c_int(1),
        ctypes.c_int32(n_features), _c_str("num_threads=1"), ctypes.byref(handle)))
    buf, out, out_len = np.empty(n_features), np.empty(1), ctypes.c_int64()
    args = (handle, buf.ctypes.data_as(ctypes.c_void_p), ctypes.byref(out_len),
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))
    call = _LIB.LGBM_BoosterPredictForMatSingleRowFast

    def predict(row: np.ndarray) -> float:
        buf[:] = row
        _safe_call(call(*args))
        return float(out[0])

    expected = float(booster.predict(np.zeros((1, n_features)), num_threads=1)[0])
    if abs(predict(np.zeros(n_features)) - expected) > 1e-12:
        raise SystemExit("LightGBM's single-row fast path disagrees with Booster.predict")
    return predict


# -- one round -------------------------------------------------------------------------------------

def stop(procs: dict[str, subprocess.Popen]) -> None:
    for p in procs.values():
        try:
            os.killpg(p.pid, signal.SIGTERM)  # the group led by the PID this script started
        except ProcessLookupError:
            pass
    for p in procs.values():
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def run_round(k: int, srv: dict[str, dict], info: dict, concs: list[int], dur: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               MODEL_PATH=str(OUT / "model.txt"), MLFLOW_TRACKING_URI=f"file://{OUT}/mlruns")
    env.pop("LOOPML_ADMIN_TOKEN", None)
    procs: dict[str, subprocess.Popen] = {}
    res: dict = {"servers": {n: {} for n in srv}}
    segments = STATE / "predictions"  # the demo's logged predictions; a round's servers add GBs to it
    kept = set(segments.rglob("seg-*.jsonl"))
    try:
        for name, s in srv.items():
            log = open(OUT / f"{name}_round{k}.log", "w")  # noqa: SIM115 (closed with the process)
            bindir = str(Path(s["cmd"][0]).parent)  # mlflow execs `uvicorn` from PATH
            procs[name] = subprocess.Popen(s["cmd"], cwd=OUT, env=dict(env, PATH=f"{bindir}:{env['PATH']}",
                                                                   **s.get("env", {})),
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        t0, pending = time.time(), set(srv)
        while pending and time.time() - t0 < 300:
            for name in list(pending):
                if procs[name].poll() is not None:
                    raise SystemExit(f"{name} exited on start; see {OUT / f'{name}_round{k}.log'}")
                try:
                    if http(srv[name]["health"], timeout=1)[0] == 200:
                        res["servers"][name]["ready_s"] = round(time.time() - t0, 1)
                        pending.discard(name)
                except Exception:  # not up yet: connection refused / 503 while loading
                    pass
            time.sleep(0.5)
        if pending:
            raise SystemExit(f"not ready after 300 s: {sorted(pending)}")
        for name, s in srv.items():  # same answer everywhere, else the timings compare different work
            status, raw = http(s["url"], s["body"])
            if s["score"] is not None:
                got = float(s["score"](json.loads(raw)))
                res["servers"][name]["score"] = got
                if abs(got - info["expected"]) > TOL:
                    raise SystemExit(f"{name} answered {got}; the booster's score is {info['expected']}")
        lua = {n: lua_for(n, s["body"], s.get("bodies")) for n, s in srv.items()}
        for n, s in srv.items():
            wrk(s["url"], lua[n], 4, 2)  # warm-up
        names = list(srv)
        order = names[k % len(names):] + names[:k % len(names)]
        res["order"] = order
        for c in concs:
            for n in order:
                r = wrk(srv[n]["url"], lua[n], c, dur, pgid=procs[n].pid)
                res["servers"][n][f"c{c}"] = r
                print(f"round {k} c={c:<2} {n:14s} rps={r['rps']:8.1f} p50={r['p50_us'] / 1000:7.2f}ms "
                      f"p99={r['p99_us'] / 1000:7.2f}ms cpu/req={r['server_cpu_us_per_req']:6.0f}us "
                      f"errors={r['errors']}", flush=True)
    finally:
        stop(procs)
        for seg in set(segments.rglob("seg-*.jsonl")) - kept:  # else prepare() reads them all next time
            seg.unlink()
    return res


# -- report ----------------------------------------------------------------------------------------

def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(rounds: list[dict], floors: list[dict], concs: list[int]) -> dict:
    names = list(rounds[0]["servers"])
    summary: dict = {"servers": {}, "ratios": {}, "floors": {}}
    for c in concs:
        key = f"c{c}"
        print(f"\nconcurrency {c}: median over {len(rounds)} rounds")
        print(f"{'server':14s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU us/req':>11s} {'errors':>7s}")
        for n in names:
            rs = [r["servers"][n][key] for r in rounds]
            s = {"rps": median([r["rps"] for r in rs]), "p50_ms": median([r["p50_us"] / 1000 for r in rs]),
                 "p99_ms": median([r["p99_us"] / 1000 for r in rs]),
                 "cpu_us_per_req": median([r["server_cpu_us_per_req"] for r in rs]),
                 "errors": sum(r["errors"] for r in rs)}
            summary["servers"].setdefault(n, {})[key] = s
            print(f"{n:14s} {s['rps']:9.1f} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f} {s['cpu_us_per_req']:11.0f} "
                  f"{s['errors']:7d}")
        for subject in [n for n in names if n.startswith("loopml")]:
            print(f"{subject} / peer, median of per-round ratios (throughput: higher is better; p50, p99, CPU: lower)")
            for n in names:
                if n.startswith("loopml"):
                    continue
                ratio = {}
                for m, f in [("rps", lambda r: r["rps"]), ("p50", lambda r: r["p50_us"]),
                             ("p99", lambda r: r["p99_us"]), ("cpu", lambda r: r["server_cpu_us_per_req"])]:
                    ratio[m] = median([f(r["servers"][subject][key]) / f(r["servers"][n][key]) for r in rounds])
                summary["ratios"].setdefault(subject, {}).setdefault(n, {})[key] = ratio
                print(f"  vs {n:14s} throughput {ratio['rps']:5.2f}x  p50 {ratio['p50']:5.2f}x  "
                      f"p99 {ratio['p99']:5.2f}x  CPU/req {ratio['cpu']:5.2f}x")
    for now, then in (("loopml", "loopml_before"), ("loopml_varied", "loopml_varied_before")):
        if then not in names:
            continue
        for c in concs:
            key = f"c{c}"
            ratio = {m: median([f(r["servers"][now][key]) / f(r["servers"][then][key]) for r in rounds])
                     for m, f in [("rps", lambda r: r["rps"]), ("p99", lambda r: r["p99_us"]),
                                  ("cpu", lambda r: r["server_cpu_us_per_req"])]}
            summary["ratios"].setdefault(now, {}).setdefault(then, {})[key] = ratio
            print(f"{now} / {then} at c={c}: throughput {ratio['rps']:5.2f}x  p99 {ratio['p99']:5.2f}x  "
                  f"CPU/req {ratio['cpu']:5.2f}x (median of per-round ratios)")
    print(f"\nin process, one row, median over {len(floors)} fresh processes (us; thread CPU: this thread's CPU time "
          f"per call, without the time the scheduler ran something else)")
    for k in floors[0]:
        s = {m: median([f[k].get(m, float("nan")) for f in floors])
             for m in ("p50_us", "p99_us", "p999_us", "cpu_us_per_call", "thread_cpu_p50_us", "thread_cpu_p99_us")}
        summary["floors"][k] = s
        print(f"  {k:30s} p50 {s['p50_us']:7.1f}  p99 {s['p99_us']:7.1f}  p99.9 {s['p999_us']:7.1f}  "
              f"CPU/call {s['cpu_us_per_call']:7.1f}  thread CPU p50 {s['thread_cpu_p50_us']:6.1f} "
              f"p99 {s['thread_cpu_p99_us']:6.1f}")
    for k in [k for k in floors[0] if f"before_{k}" in floors[0]]:
        ratio = {m: median([f[k][m] / f[f"before_{k}"][m] for f in floors]) for m in ("p50_us", "p99_us", "thread_cpu_p99_us")}
        summary.setdefault("inprocess_vs_before", {})[k] = ratio
        print(f"  {k} / before_{k}: p50 {ratio['p50_us']:.2f}x  p99 {ratio['p99_us']:.2f}x  thread CPU p99 "
              f"{ratio['thread_cpu_p99_us']:.2f}x (median of per-round ratios)")
    c = concs[-1]
    for floor_name in [n for n in ("asgi_const", "asgi_const_std") if n in names]:
        for subject in [n for n in names if n.startswith("loopml")]:
            ratio = median([r["servers"][subject][f"c{c}"]["server_cpu_us_per_req"]
                            / (r["servers"][floor_name][f"c{c}"]["server_cpu_us_per_req"]
                               + f["booster_predict"]["cpu_us_per_call"])
                            for r, f in zip(rounds, floors, strict=True)])
            summary.setdefault("cpu_vs_floor", {}).setdefault(subject, {})[floor_name] = ratio
            print(f"server CPU per request at c={c}: {subject} / ({floor_name} + one-row Booster.predict) = "
                  f"{ratio:.2f}x (median of per-round ratios)")
    return summary


def git_commit() -> str:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True,
                           text=True).stdout.strip()
    return head + ("-dirty (uncommitted changes under src/ are what runs)" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--only", nargs="+", help="a subset of servers (loopml and asgi_const always run)")
    ap.add_argument("--before", metavar="REV", help="also serve loopml's src/ at git revision REV (loopml_before)")
    ap.add_argument("--after", metavar="REV", help="serve loopml's src/ at git revision REV instead of this checkout's")
    ap.add_argument("--report", metavar="JSON", help="print the report of a saved results file and exit")
    ap.add_argument("--inprocess", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", action="store_true", help="only compare ONNX Runtime call styles (run bench once first)")
    ap.add_argument("--n", type=int, default=5000, help="calls per in-process floor")
    ap.add_argument("--pin", type=int, default=(os.cpu_count() or 1) - 1,
                    help="CPU to pin the in-process floors to with taskset (-1: not pinned)")
    a = ap.parse_args()
    if a.report:
        doc = json.loads(Path(a.report).read_text())
        report(doc["rounds"], doc["floors"], doc["args"]["concurrency"])
        return
    if a.inprocess:
        print(json.dumps(inprocess(a.n)))
        return
    if a.onnx:
        if a.pin >= 0 and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {a.pin})
        print(f"ONNX Runtime one-row calls, pinned to CPU {a.pin}; load average {Path('/proc/loadavg').read_text().split()[:3]}")
        onnx_variants(min(a.n, 3000))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    before = f" (before: {a.before})" if a.before else ""
    print(f"loopml {a.after or git_commit()}{before}; load average at start "
          f"{Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    ensure_state()
    info = prepare()
    srv = servers(info, after=worktree(a.after, OUT) / "src" if a.after else None,
                  before=(a.before, worktree(a.before, OUT) / "src") if a.before else None)
    if a.only:
        varied = {"loopml_varied_before"} if "loopml_varied" in a.only else set()
        srv = {n: s for n, s in srv.items() if n in {*a.only, "loopml", "asgi_const", "loopml_before", *varied}}
    layout_peers(info, set(srv))
    print(f"flight {info['request']}; model v{info['model_version']} ({info['backend']}); "
          f"score {info['expected']:.6f}; {len(info['features'])} features; servers {list(srv)}", flush=True)
    rounds, floors = [], []
    pin = ["taskset", "-c", str(a.pin)] if a.pin >= 0 and shutil.which("taskset") else []

    def floors_of(name: str) -> dict:
        env = dict(os.environ, OMP_NUM_THREADS="1", **srv[name].get("env", {}))
        out = subprocess.run([*pin, str(LOOPML_PY), __file__, "--inprocess", "--n", str(a.n)], capture_output=True,
                             text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    for k in range(a.rounds):
        # with --before, the before code's Predictor is timed too (fresh processes, order alternating by round)
        names = ["loopml", "loopml_before"] if "loopml_before" in srv else ["loopml"]
        got = {n: floors_of(n) for n in (names if k % 2 == 0 else names[::-1])}
        floors.append(got["loopml"] | {f"before_{key}": v for key, v in got.get("loopml_before", {}).items()
                                       if key.startswith("predictor_")})
        rounds.append(run_round(k, srv, info, a.concurrency, a.duration))
    doc = {"commit": a.after or git_commit(), "before": a.before, "info": info, "rounds": rounds, "floors": floors, "args": vars(a),
           "mlserver_batching": BATCH, "loopml_batch_window_ms": LOOPML_BATCH_MS}
    path = OUT / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=1, default=str))  # raw rounds first: the report reads only these
    summary = report(rounds, floors, a.concurrency)
    print(f"load average at end {open('/proc/loadavg').read().split()[:3]}")
    path.write_text(json.dumps(doc | {"summary": summary}, indent=1, default=str))
    print(f"raw results: {path}")
    if any(s[f"c{c}"]["errors"] for s in summary["servers"].values() for c in a.concurrency):
        sys.exit(1)


if __name__ == "__main__":
    main()
