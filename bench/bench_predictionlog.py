"""Durable prediction logging: loopml's group commit vs an fsync per prediction, under concurrency.

What is measured
----------------
``--writers`` concurrent writers (default 16, as wrk -c16 against ``loopml serve``) each log
``--n`` single-prediction records (the record ``loopml serve`` writes for the flights model:
request, 19 features, score) and wait until the record is on disk before logging the next one;
the per-record acknowledgement latency is timed (``perf_counter``) and the total records/s.

- ``loopml_async``: ``PredictionLog.append_predictions`` + ``await log.durable(ticket)`` from
  ``--writers`` coroutines on one asyncio event loop (what the HTTP server does: the loop never
  blocks on the disk; a flusher thread fsyncs and wakes every writer its fsync covered).
- ``loopml_threads``: ``PredictionLog.log_predictions`` (blocking) from ``--writers`` threads.
- ``fsync_each`` (the peer: the straightforward durable logger): one lock, write + flush + fsync
  per record, from ``--writers`` threads.
- ``no_fsync`` (upper bound, not durable against a machine crash): write + flush per record.

Rounds rotate the order; reported are medians over rounds and the median per-round ratio of
loopml's throughput to the peer's. Files go to bench/.out/predictionlog/ (gitignored; the disk
under test is the one the serving state lives on).

Run:  .venv/bin/python bench/bench_predictionlog.py [--rounds 3] [--n 200] [--writers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

from loopml.serving.predictionlog import PredictionLog

OUT = Path(__file__).resolve().parent / ".out" / "predictionlog"
RECORD = {"request_id": "0" * 32, "entity_id": None, "model_version": 1, "at": "2013-03-03T00:29:00+00:00",
          "score": 0.2331, "request": {"carrier": "B6", "flight": 115, "origin": "JFK", "dest": "MSY",
                                       "tailnum": "N307JB", "sched_dep": "2013-03-03T02:29:00+00:00"},
          "features": {f"feature_{i:02d}": 1.5 * i for i in range(19)}}


def _rec(i: int) -> dict:
    return {**RECORD, "request_id": f"{i:032d}"}


def loopml_async(folder: Path, writers: int, n: int) -> list[float]:
    log = PredictionLog(folder)
    lat: list[float] = []

    async def writer(w: int) -> None:
        for i in range(n):
            t = time.perf_counter()
            await log.durable(log.append_predictions([_rec(w * n + i)]))
            lat.append(time.perf_counter() - t)

    async def main() -> None:
        await asyncio.gather(*(writer(w) for w in range(writers)))

    asyncio.run(main())
    log.close()
    return lat


def _threads(writers: int, n: int, one: object) -> list[float]:
    lat: list[float] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        mine = []
        for i in range(n):
            t = time.perf_counter()
            one(_rec(w * n + i))  # type: ignore[operator]
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lat


def loopml_threads(folder: Path, writers: int, n: int) -> list[float]:
    log = PredictionLog(folder)
    lat = _threads(writers, n, lambda r: log.log_predictions([r]))
    log.close()
    return lat


def _plain(folder: Path, writers: int, n: int, *, sync: bool) -> list[float]:
    import orjson

    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / "seg.jsonl", "ab")  # noqa: SIM115
    lock = threading.Lock()

    def one(r: dict) -> None:
        with lock:
            fh.write(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE))
            fh.flush()
            if sync:
                os.fsync(fh.fileno())

    lat = _threads(writers, n, one)
    fh.close()
    return lat


METHODS = {"loopml_async": loopml_async, "loopml_threads": loopml_threads,
           "fsync_each": lambda f, w, n: _plain(f, w, n, sync=True),
           "no_fsync": lambda f, w, n: _plain(f, w, n, sync=False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=200, help="records per writer")
    ap.add_argument("--writers", type=int, default=16)
    a = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=OUT.parents[1]).stdout.strip()
    print(f"commit {commit}, load average at start {os.getloadavg()[0]:.1f}; {a.writers} writers x {a.n} records")
    names = list(METHODS)
    res: dict[str, list[dict]] = {m: [] for m in names}
    for k in range(a.rounds):
        for m in names[k % len(names):] + names[:k % len(names)]:
            folder = OUT / f"{m}-{k}"
            shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            lat = sorted(METHODS[m](folder, a.writers, a.n))
            wall = time.perf_counter() - t0
            assert len(lat) == a.writers * a.n
            lines = sum(p.read_bytes().count(b"\n") for p in folder.rglob("*.jsonl"))
            assert lines == a.writers * a.n, f"{m}: {lines} records on disk, expected {a.writers * a.n}"
            res[m].append({"per_s": len(lat) / wall, "p50_ms": lat[len(lat) // 2] * 1e3,
                           "p99_ms": lat[int(len(lat) * 0.99)] * 1e3})
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{'method':16} {'records/s':>10} {'ack p50 ms':>11} {'ack p99 ms':>11}")
    for m in names:
        med = {k: statistics.median(r[k] for r in res[m]) for k in ("per_s", "p50_ms", "p99_ms")}
        print(f"{m:16} {med['per_s']:10.0f} {med['p50_ms']:11.3f} {med['p99_ms']:11.2f}")
    for m in ("loopml_async", "loopml_threads"):
        ratio = statistics.median(x["per_s"] / y["per_s"] for x, y in zip(res[m], res["fsync_each"], strict=True))
        print(f"{m} / fsync_each throughput, median of per-round ratios: {ratio:.1f}x")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
