"""Online reads of long windows with and without tiles, on the same state, in one run.

What is measured
----------------
``value_at(feature, state, t)`` -- the read behind ``OnlineExecutor.get`` -- for one entity's state,
``--calls`` timed calls per case (``perf_counter_ns``, median and p99 in microseconds):

1. ``flights``: the flights project's long-window features (``carrier_arr_delay_mean_24h``,
   ``carrier_delayed_frac_7d``, ``route_delayed_frac_7d``) for the busiest carrier (UA) and route
   (EWR-ORD's key of the group) at 2013-06-15 15:00 UTC, state replayed from the log and trimmed as
   ``flush`` trims it. ``tiled`` is the state as the executor keeps it; ``raw`` is the same state with
   tiles switched off (``use_tiles(0)``): every read walks the window's events, as before tiles.
2. ``dense``: a synthetic entity with one event a minute for 30 days (43,200 events; values
   ``minute % 97``, integer-valued so sums are exact) and ``sum``/``mean``/``min``/``max``/``std`` over
   1, 7 and 30 days, read at the end -- the case tiles are for (a busy key, a long window).

Every tiled value is compared with the raw one (equal; std within 1e-9 relative), else exit 1.

Run:  .venv/bin/python bench/bench_tiles.py   (the flights case needs the bench/.out state of
      bench_online.py; it is skipped if that is missing)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loopml.features import Aggregate
from loopml.features.online import GroupState, OnlineExecutor, value_at
from loopml.features.tiles import tile_length
from loopml.timeutil import duration_us, to_us

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "bench" / ".out" / "state"  # bench_online.py's


def timed(f, st, t_us: int, calls: int) -> tuple[float, float, object]:
    ns = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        value_at(f, st, t_us)
        ns.append(time.perf_counter_ns() - t0)
    ns.sort()
    return statistics.median(ns) / 1000, ns[int(0.99 * (len(ns) - 1))] / 1000, value_at(f, st, t_us)


def same(f, a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9) if f.agg == "std" else a == b


def compare(rows: list, calls: int) -> int:
    """rows: (case, feature, tiled state, t_us); prints one table line each, returns mismatches."""
    bad = 0
    print("| case | feature | events in window | tiles | raw p50 / p99 µs | tiled p50 / p99 µs | raw / tiled (p50) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case, f, st, t_us in rows:
        raw = GroupState.from_bytes(st.to_bytes())
        raw.use_tiles(0)
        r50, r99, rv = timed(f, raw, t_us, calls)
        t50, t99, tv = timed(f, st, t_us, calls)
        n = sum(1 for x in st.ts if t_us - duration_us(f.window) < x <= t_us)
        ok = same(f, tv, rv)
        bad += not ok
        print(f"| {case} | {f.name} | {n:,} | {st.tiles.count} | {r50:.1f} / {r99:.1f} | {t50:.1f} / {t99:.1f} | "
              f"{r50 / t50:.1f}x{'' if ok else ' MISMATCH'} |")
    return bad


def flights_rows() -> list:
    from loopml import load_project
    from loopml.events import Replayer
    from loopml.workspace import Workspace

    if not STATE.exists():
        print(f"(flights case skipped: no state under {STATE}; run bench/bench_online.py first)")
        return []
    p = load_project(ROOT / "examples" / "flights")
    ws = Workspace.for_project(p, STATE)
    names = ("carrier_arr_delay_mean_24h", "carrier_delayed_frac_7d", "route_delayed_frac_7d")
    feats = [f for f in p.features if f.name in names]
    online = OnlineExecutor(p.features)
    t = datetime(2013, 6, 15, 15, 0, tzinfo=UTC)
    for source, batch in Replayer(ws.log, online.sources, columns=online.columns()).advance_to(t):
        online.update(source, batch)
    online.watermark_us = to_us(t)
    online.compact()
    request = {"carrier": "UA", "origin": "EWR", "dest": "ORD"}
    states = online._states(request, online._plan_groups)
    plan = {f.name: gid for f, gid, _ in online._plan}
    return [("flights", f, states[plan[f.name]], to_us(t)) for f in feats]


def dense_rows() -> list:
    day = timedelta(days=1)
    feats = [Aggregate(f"{agg}_{d}d", "ev", "k", agg, d * day, column="x")
             for d in (1, 7, 30) for agg in ("sum", "mean", "min", "max", "std")]
    st = GroupState()
    st.empty_like(["x"])
    st.use_tiles(tile_length(duration_us(f.window) for f in feats))
    t0 = to_us(datetime(2013, 6, 1, tzinfo=UTC))
    for i in range(30 * 24 * 60):
        st.append(t0 + (i + 1) * 60_000_000, [("x", float(i % 97))])
    return [("dense", f, st, st.ts[-1]) for f in feats]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    bad = compare(flights_rows() + dense_rows(), args.calls)
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True, check=False).stdout
    print(f"\n{args.calls} calls per case; python {sys.version.split()[0]}; load average {os.getloadavg()}; "
          f"loopml {sha}{' + uncommitted src changes' if dirty else ''}")
    if bad:
        print(f"ERROR: {bad} tiled values differ from raw ones")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
