"""Online lookups as a serving process makes them: ``OnlineExecutor.get`` reading a SQLite online store.

What is measured
----------------
The serving state of ``bench_serving.py`` (``bench/.out/serve-state``: ``loopml demo --until
2013-03-03``, 7 feature groups, state for ~3,400 planes). ``--n`` flights (default 3,000; the
served flights in that state's prediction log, cycled) are looked up at their prediction time by
a fresh ``OnlineExecutor`` over ``SQLiteOnlineStore``, as ``loopml serve`` does: every ``get``
reads the 7 groups' state blobs from the store. Timed with ``perf_counter_ns`` per call after a
warm-up pass over the same flights; p50/p99 in microseconds.

- ``loopml``: the code under ``src/`` (decoded state cached while the stored bytes are unchanged,
  one UNION ALL of primary-key probes, key text without ``json.dumps``).
- ``loopml@REV`` (``--before REV``): the same lookups with loopml's source at git revision REV,
  checked out into bench/.out/lookup/ (a git worktree) and imported in a subprocess -- the
  before/after of a change, in one run, on one machine state.
- floor: the 7 blobs read with one cached ``SELECT blob FROM state WHERE grp = ? AND key = ?``
  each (``sqlite3``, no decoding, no feature computation).

Both loopml runs must return identical feature values (the script exits 1 otherwise). Rounds
alternate the order; medians over rounds.

Run:  .venv/bin/python bench/bench_lookup.py [--before REV] [--rounds 3] [--n 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _revisions import worktree  # bench/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "bench" / ".out" / "serve-state"
OUT = ROOT / "bench" / ".out" / "lookup"
PY = ROOT / ".venv" / "bin" / "python"

CHILD = r"""
import json, sqlite3, sys, time
from loopml import load_project
from loopml.features.online import OnlineExecutor, encode_key
from loopml.features.store import SQLiteOnlineStore
from loopml.serving.predictionlog import PredictionLog
from loopml.serving.schema import RequestSchema
from loopml.workspace import Workspace
import loopml

n, mode = int(sys.argv[1]), sys.argv[2]
p = load_project(sys.argv[3])
ws = Workspace.for_project(p, sys.argv[4])
schema = RequestSchema.from_arrow(ws.log.schema(p.spine.source), p.spine.request_fields)
logged = PredictionLog(ws.predictions).read_predictions().sort_values("at")
fields = list(p.spine.request_fields)
reqs = []
for r in logged["request"]:
    clean = schema.validate({f: (v.isoformat() if hasattr(v, "isoformat") else v) for f, v in r.items() if f in fields})
    reqs.append((clean, clean[p.spine.time_column] - p.spine.lead))
reqs = (reqs * (n // len(reqs) + 1))[:n]
online = OnlineExecutor(p.features, store=SQLiteOnlineStore(ws.online_path))
if mode == "floor":
    con = sqlite3.connect(ws.online_path)
    pairs = [[(g.id, encode_key(tuple(c.get(k) for k in g.keys))) for g in online.groups] for c, _ in reqs]
    fn = lambda i: [con.execute("SELECT blob FROM state WHERE grp = ? AND key = ?", pr).fetchone() for pr in pairs[i]]
else:
    fn = lambda i: online.get(reqs[i][0], reqs[i][1])
for i in range(n):
    fn(i)
ts = []
for i in range(n):
    t = time.perf_counter_ns(); fn(i); ts.append(time.perf_counter_ns() - t)
ts.sort()
values = [] if mode == "floor" else [online.get(c, t) for c, t in reqs[:300]]
print(json.dumps({"p50_us": ts[n // 2] / 1e3, "p99_us": ts[int(n * 0.99)] / 1e3, "mean_us": sum(ts) / n / 1e3,
                  "values": values, "src": loopml.__file__}, default=str))
"""


def run(n: int, mode: str, src: Path | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    out = subprocess.run([str(PY), "-c", CHILD, str(n), mode, str(ROOT / "examples" / "flights"), str(STATE)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="git revision to compare with (its src/ via a worktree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=3000)
    a = ap.parse_args()
    if not (STATE / "online.sqlite").exists():
        sys.exit(f"no serving state in {STATE}: run bench/bench_serving.py once first")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"loopml {head}; load average at start {os.getloadavg()[0]:.1f}; {a.n} lookups per run")
    subjects: dict[str, Path | None] = {"loopml": None, "floor": None}
    if a.before:
        subjects[f"loopml@{a.before}"] = worktree(a.before, OUT) / "src"
    res: dict[str, list[dict]] = {s: [] for s in subjects}
    names = list(subjects)
    for k in range(a.rounds):
        for s in names[k % len(names):] + names[:k % len(names)]:
            res[s].append(run(a.n, "floor" if s == "floor" else "get", subjects[s]))
    bad = 0
    if a.before:
        bad = sum(x != y for x, y in zip(res["loopml"][0]["values"], res[f"loopml@{a.before}"][0]["values"], strict=True))
        print(f"feature values of 300 lookups: {'identical' if not bad else f'{bad} DIFFER'} (loopml vs loopml@{a.before}); "
              f"{a.before} ran from {res[f'loopml@{a.before}'][0]['src']}")
    print(f"\n{'lookup':34} {'p50 us':>8} {'p99 us':>9} {'mean us':>8} {'p50 / floor':>12}")
    floor50 = statistics.median(r["p50_us"] for r in res["floor"])
    for s in names:
        med = {m: statistics.median(r[m] for r in res[s]) for m in ("p50_us", "p99_us", "mean_us")}
        print(f"{s:34} {med['p50_us']:8.1f} {med['p99_us']:9.1f} {med['mean_us']:8.1f} {med['p50_us'] / floor50:12.2f}")
    if a.before:
        ratio = statistics.median(x["p50_us"] / y["p50_us"]
                                  for x, y in zip(res[f"loopml@{a.before}"], res["loopml"], strict=True))
        print(f"loopml@{a.before} / loopml p50, median of per-round ratios: {ratio:.2f}x")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
